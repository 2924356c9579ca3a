"""Service transactions that run again when PostgreSQL picks them as the victim of a deadlock or a
serialization failure (SQLSTATE 40P01 / 40001), and the one order in which rows are locked.

`conflict_retrying` wraps a service whose body is one transaction (or a few, each whole): a conflict
rolls the transaction back, so running the function again is safe as long as nothing it does outside
the database has happened yet. No service calls Stripe or any network inside a transaction, and what
must follow a commit (a task, a Stripe request) is registered with `transaction.on_commit`, which a
rollback discards: a retry never repeats a side effect. Called inside a transaction that is already
open (a caller's, or a request's `Idempotency-Key` record), it runs once: only the outermost
transaction can be run again, by whoever opened it (TransactionRetryMiddleware for a request).
Attempts are bounded (1 + DB_CONFLICT_RETRIES), separated by a random pause (full jitter), and
counted in `db_transaction_conflicts_total{kind, outcome, operation}`.

Lock order. A transaction that locks more than one row takes them in this order, never the reverse:

1. the webhook event (`payments.WebhookEvent`, by its unique insert or FOR UPDATE);
2. payment operations (`payments.PaymentOperation`), one at a time;
3. the subscription (`subscriptions.Subscription`);
4. the coupon, then its campaign (`coupons.Coupon`, `coupons.CouponCampaign`);
5. the license (`licensing.License`);
6. the user's credit balance (`credits.UserCreditBalance`, the locked-account door), then that
   user's grants and holds; several users' balances (a usage batch) by one statement, in ascending
   user id;
7. the coupon's running totals (`coupons.CouponUsageLimit`), counted last by a redemption.

A row inserted under a later lock takes FOR KEY SHARE on the rows its foreign keys name (a ledger row
under the balance names the subscription), so the rows above are locked FOR NO KEY UPDATE where they
can be (subscriptions, coupons): that lock does not wait for, nor block, a reference being written.

Audit rows take no lock: they are inserted unsealed. The audit chain head (`audit.AuditChainHead`)
is locked only by the sealer, in a transaction of its own that locks nothing else but the unsealed
audit rows it seals, so it cannot take part in a cycle with the services above. (Without a broker,
AUDIT_SEAL_ON_WRITE seals inside the writer's transaction: the head then comes last, after every
lock above, and conflicts that still arise are retried.)
"""

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.db import DatabaseError, connection

from billing_project.errors import retryable_conflict_of
from billing_project.metrics import DB_TRANSACTION_CONFLICTS

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def conflict_pause(attempt: int) -> None:
    """Full jitter: concurrent victims of one conflict do not collide again in step."""
    time.sleep(random.uniform(0, settings.DB_CONFLICT_BACKOFF_SECONDS * 2 ** (attempt - 1)))


def conflict_retrying(function: Callable[P, R]) -> Callable[P, R]:
    """Runs `function` again (bounded, with jitter) when its transaction met a deadlock or a
    serialization failure; put it outside the function's `transaction.atomic`."""
    operation = f"{function.__module__}.{function.__qualname__}"

    @functools.wraps(function)
    def attempts(*args: P.args, **kwargs: P.kwargs) -> R:
        if connection.in_atomic_block:
            return function(*args, **kwargs)
        attempt = 0
        while True:
            try:
                return function(*args, **kwargs)
            except DatabaseError as error:
                kind = retryable_conflict_of(error)
                if kind is None:
                    raise
                if attempt >= settings.DB_CONFLICT_RETRIES:
                    DB_TRANSACTION_CONFLICTS.labels(kind=kind, outcome="gave_up", operation=operation).inc()
                    logger.warning("%s in %s: gave up after %s retries", kind, operation, attempt)
                    raise
                attempt += 1
                DB_TRANSACTION_CONFLICTS.labels(kind=kind, outcome="retried", operation=operation).inc()
                logger.info("%s in %s: running it again (retry %s)", kind, operation, attempt)
                conflict_pause(attempt)

    return attempts
