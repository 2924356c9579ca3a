"""Periodic coupon jobs (scheduled in CELERY_BEAT_SCHEDULE). Both are idempotent."""

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from coupons.selectors.checkout import abandoned_checkouts
from coupons.services.analytics import coupon_analytics_snapshot
from coupons.services.checkout import abandoned_checkout_release

RETRY = {"acks_late": True, "autoretry_for": (Exception,), "retry_backoff": True, "max_retries": 5}


@shared_task(**RETRY)
def snapshot_coupon_analytics() -> int:
    """Yesterday's figures per coupon (rebuilt if they exist)."""
    return coupon_analytics_snapshot(day=timezone.localdate() - timedelta(days=1))


@shared_task(**RETRY)
def release_abandoned_checkouts() -> int:
    """Coupons held by checkouts that were never paid go back to their coupon and campaign."""
    now = timezone.now()
    return sum(
        abandoned_checkout_release(redemption_id=redemption_id) for redemption_id in abandoned_checkouts(now=now)
    )
