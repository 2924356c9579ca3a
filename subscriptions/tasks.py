"""Periodic subscription jobs (scheduled in CELERY_BEAT_SCHEDULE). Idempotent: see subscriptions.jobs."""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from payments.services.operations import stripe_active
from subscriptions import jobs
from subscriptions.services import dunning_run
from subscriptions.services.reconcile import stripe_reconcile

logger = logging.getLogger(__name__)

RETRY = {"acks_late": True, "autoretry_for": (Exception,), "retry_backoff": True, "max_retries": 5}


@shared_task(**RETRY)
def allocate_monthly_credits() -> dict:
    return dict(jobs.monthly_credits_allocate())


@shared_task(**RETRY)
def expire_trials() -> int:
    return jobs.trials_expire()


@shared_task(**RETRY)
def send_trial_reminders() -> int:
    return jobs.trial_reminders_send()


@shared_task(**RETRY)
def run_dunning() -> dict:
    return dict(dunning_run())


@shared_task(**RETRY)
def reconcile_stripe() -> dict:
    """Applies what Stripe says of the last STRIPE_RECONCILE_DAYS through the webhook handlers; what
    they would not apply is logged for staff (`manage.py reconcile_stripe` lists it again)."""
    if not stripe_active():
        return {"skipped": "offline provider"}
    result = stripe_reconcile(since=timezone.now() - timedelta(days=settings.STRIPE_RECONCILE_DAYS), fix=True)
    for difference in result.remaining:
        logger.warning("reconcile_stripe: still differs: %s", difference)
    return {"found": len(result.found), "applied": len(result.applied), "remaining": len(result.remaining)}
