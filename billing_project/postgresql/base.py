"""Django's PostgreSQL backend with a cheaper health check of persistent connections.

Django checks a reused connection with a `SELECT 1` round trip before each request's first query
(CONN_HEALTH_CHECKS). A usage record needs four round trips of its own, so the check is a fifth of
its database time. Here the check runs only when the connection has been idle for
DB_HEALTH_CHECK_IDLE_SECONDS since the last request that used it: a busy worker's connection
proved itself a moment ago, and an idle one (when a restart or a dropped connection is likely to
have gone unnoticed) is checked as before. A connection that breaks under a busy worker fails that
one request (503 `database_unavailable`) and is closed when the request ends, as Django closes any
connection that raised; the next request opens a new one.
"""

import time

from django.conf import settings
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    # When the connection last served a request that queried it; never, at first.
    used_at = float("-inf")

    def close_if_unusable_or_obsolete(self):
        # Runs at the start and the end of every request (and Celery task). `health_check_done` is
        # true only when the request ending now queried the connection: then it was just used.
        if self.connection is not None and self.health_check_done:
            self.used_at = time.monotonic()
        super().close_if_unusable_or_obsolete()

    def close_if_health_check_failed(self):
        if (
            self.connection is not None
            and not self.health_check_done
            and time.monotonic() - self.used_at < settings.DB_HEALTH_CHECK_IDLE_SECONDS
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
