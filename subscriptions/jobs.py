"""The periodic subscription jobs, shared by the Celery tasks and the manage.py commands. Each finds
its work with one query and handles each item in its own transaction (and its own payment operation),
so a retried or overlapping run finds nothing left to do and never charges twice, and one item that
fails is counted (`failed`) while the others go on. `progress` wraps the item list (a progress bar
in commands)."""

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

from django.utils import timezone

from billing_project.jobs import items_run
from payments.services.operations import OperationInProgress
from payments.stripe_api import ProviderUnavailable
from subscriptions import services


def _as_is(items: Iterable) -> Iterable:
    return items


def monthly_credits_allocate(*, now: datetime | None = None, progress: Callable = _as_is) -> Counter:
    """Ends or renews the periods that are over (free and offline-billed plans; Stripe renews its
    own through invoice.paid), then allocates every live subscription's current credit period once
    (annual plans get theirs month by month)."""
    now = now or timezone.now()

    def roll_over(subscription_id) -> str:
        try:
            return services.subscription_period_roll_over(subscription_id=subscription_id, now=now)
        except (ProviderUnavailable, OperationInProgress):
            return "payment_deferred"  # the next run resumes the same renewal charge

    def allocate(subscription_id) -> str | None:
        return "allocated" if services.subscription_allocate_current(subscription_id=subscription_id, now=now) else None

    outcomes = items_run(
        job="roll_over", items=progress(services.subscriptions_due_for_roll_over(now=now)), work=roll_over
    )
    to_allocate = services.subscriptions_to_allocate(now=now)
    allocated = items_run(job="allocate", items=progress(to_allocate), work=allocate)
    if to_allocate:
        outcomes["allocated"] = allocated.pop("allocated", 0)
    outcomes.update(allocated)
    return outcomes


def trials_expire(*, now: datetime | None = None, progress: Callable = _as_is) -> int:
    now = now or timezone.now()
    return sum(services.trial_expire(subscription_id=pk, now=now) for pk in progress(services.trials_ended(now=now)))


def trial_reminders_send(*, now: datetime | None = None, progress: Callable = _as_is) -> int:
    now = now or timezone.now()
    due = services.trials_due_a_reminder(now=now)
    return sum(services.trial_reminder_send(subscription_id=pk, now=now) for pk in progress(due))
