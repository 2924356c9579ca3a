"""Periodic subscription jobs (scheduled in CELERY_BEAT_SCHEDULE). Idempotent: see subscriptions.jobs."""

from celery import shared_task

from subscriptions import jobs
from subscriptions.services import dunning_run

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
