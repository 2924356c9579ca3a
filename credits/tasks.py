"""Periodic credit jobs (scheduled in CELERY_BEAT_SCHEDULE). Each is idempotent: a retry or an
overlapping run finds nothing left to do."""

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from credits.services import credits_expire, holds_expire
from credits.services.ledger import usage_rollup_day
from credits.services.recharge import auto_recharge_attempt

RETRY = {"acks_late": True, "autoretry_for": (Exception,), "retry_backoff": True, "max_retries": 5}


@shared_task(**RETRY)
def expire_credit_holds() -> int:
    return holds_expire()


@shared_task(**RETRY)
def expire_credits() -> int:
    """Expires what is left of the grants past their expiry and closes those spent before it;
    returns how many grants were expired."""
    return credits_expire(now=timezone.now()).expired


@shared_task(**RETRY)
def rollup_usage_daily() -> int:
    """Yesterday's summaries, final, and today's so far."""
    today = timezone.now().date()
    return usage_rollup_day(day=today - timedelta(days=1)) + usage_rollup_day(day=today)


@shared_task(acks_late=True)
def auto_recharge_run(user_id: int) -> str | None:
    """One auto-recharge check of the user, queued by a deduction below their threshold. Not retried:
    an operation it opened and could not finish is resumed by reconcile_payments."""
    operation = auto_recharge_attempt(user_id=user_id)
    return str(operation.pk) if operation else None
