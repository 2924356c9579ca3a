"""The periodic subscription jobs, shared by the Celery tasks and the manage.py commands. Each finds
its work with one query and handles each item in its own transaction, so a retried or overlapping
run finds nothing left to do. `progress` wraps the item list (a progress bar in commands)."""

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

from django.utils import timezone

from subscriptions import services


def _as_is(items: Iterable) -> Iterable:
    return items


def monthly_credits_allocate(*, now: datetime | None = None, progress: Callable = _as_is) -> Counter:
    """Ends or renews the periods that are over (free and offline-billed plans; Stripe renews its
    own through invoice.paid), then allocates every live subscription's current credit period once
    (annual plans get theirs month by month)."""
    now = now or timezone.now()
    outcomes = Counter()
    for subscription_id in progress(services.subscriptions_due_for_roll_over(now=now)):
        outcomes[services.subscription_period_roll_over(subscription_id=subscription_id, now=now)] += 1
    for subscription_id in progress(services.subscriptions_to_allocate(now=now)):
        outcomes["allocated"] += services.subscription_allocate_current(subscription_id=subscription_id, now=now)
    return outcomes


def trials_expire(*, now: datetime | None = None, progress: Callable = _as_is) -> int:
    now = now or timezone.now()
    return sum(services.trial_expire(subscription_id=pk, now=now) for pk in progress(services.trials_ended(now=now)))


def trial_reminders_send(*, now: datetime | None = None, progress: Callable = _as_is) -> int:
    now = now or timezone.now()
    due = services.trials_due_a_reminder(now=now)
    return sum(services.trial_reminder_send(subscription_id=pk, now=now) for pk in progress(due))
