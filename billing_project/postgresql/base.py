"""Django's PostgreSQL backend with two round trips fewer where it can: the health check of a busy
persistent connection, and the BEGIN of every transaction.

Health check. Django checks a reused connection with a `SELECT 1` round trip before each request's
first query (CONN_HEALTH_CHECKS). A usage record needs four round trips of its own, so the check is
a fifth of its database time. Here the check runs only when the connection has been idle for
DB_HEALTH_CHECK_IDLE_SECONDS since the last request that used it: a busy worker's connection proved
itself a moment ago, and an idle one (when a restart or a dropped connection is likely to have gone
unnoticed) is checked as before. A connection that breaks under a busy worker fails that one
request (503 `database_unavailable`) and is closed when the request ends, as Django closes any
connection that raised; the next request opens a new one.

BEGIN. With autocommit off, psycopg sends BEGIN in a round trip of its own before a transaction's
first statement: a usage record's fourth, a Stripe renewal's sixteenth. Here psycopg stays in
autocommit, and Django's autocommit state (what `transaction.atomic` turns off) decides instead:
a statement executed while Django is in a transaction that the server has not begun yet carries
`BEGIN; ` in front of it, in the same round trip. The other ways a statement reaches the server
(executemany, COPY, a streamed or server-side cursor) send BEGIN alone first, as psycopg would.
COMMIT and ROLLBACK are psycopg's, which send them whenever the server holds a transaction.
"""

import time

from django.conf import settings
from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus


class Cursor(base.Cursor):
    """Django's client-side binding cursor, beginning the transaction Django is in (see above)."""

    # The wrapper whose transactions this cursor's statements belong to; None for a cursor psycopg
    # makes for itself (`Connection.execute`, as in the health check), which runs in autocommit.
    wrapper = None

    def execute(self, query, params=None, **kwargs):
        if not _transaction_to_begin(self.wrapper):
            return super().execute(query, params, **kwargs)
        if not isinstance(query, str):
            self.wrapper.connection.execute("BEGIN")
            return super().execute(query, params, **kwargs)
        super().execute("BEGIN; " + query, params, **kwargs)
        # Stand on the statement's own results, as if it had been sent alone.
        self.nextset()
        return self

    def executemany(self, *args, **kwargs):
        _begin_alone(self.wrapper)
        return super().executemany(*args, **kwargs)

    def copy(self, *args, **kwargs):
        _begin_alone(self.wrapper)
        return super().copy(*args, **kwargs)

    def stream(self, *args, **kwargs):
        _begin_alone(self.wrapper)
        return super().stream(*args, **kwargs)


def _transaction_to_begin(wrapper) -> bool:
    return (
        wrapper is not None
        and not wrapper.autocommit
        and wrapper.connection.pgconn.transaction_status == TransactionStatus.IDLE
    )


def _begin_alone(wrapper) -> None:
    if _transaction_to_begin(wrapper):
        wrapper.connection.execute("BEGIN")


class DatabaseWrapper(base.DatabaseWrapper):
    # When the connection last served a request that queried it; never, at first.
    used_at = float("-inf")

    def get_connection_params(self):
        return {**super().get_connection_params(), "cursor_factory": Cursor}

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        connection.autocommit = True
        return connection

    def _set_autocommit(self, autocommit):
        """Nothing to tell psycopg: Django's own `autocommit`, which its caller sets, is what the
        cursors read."""

    def create_cursor(self, name=None):
        if name:
            # A server-side cursor declares itself when executed, so the transaction begins first.
            # It is holdable (Django reads psycopg's autocommit), as Django makes one outside a
            # transaction: it then outlives the transaction's end, which nothing here relies on.
            _begin_alone(self)
            return super().create_cursor(name)
        cursor = super().create_cursor()
        cursor.wrapper = self
        return cursor

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
