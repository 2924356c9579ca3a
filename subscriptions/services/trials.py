"""Trials: reminders before the end (the subscription.trial_ending notification), and the end itself
(hourly task, manage.py expire_trials)."""

from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of
from billing_project.enums import EventType, SubscriptionTier
from billing_project.errors import Conflict
from billing_project.metrics import TRIAL_EXPIRATIONS, TRIAL_REMINDERS_SENT
from billing_project.outbound import notify
from subscriptions.codes import ErrorCode
from subscriptions.models import Subscription, SubscriptionStatus
from subscriptions.services.lifecycle import subscription_lock, subscription_transition

Status = SubscriptionStatus
# (days before the end, the field that remembers the e-mail went out), latest reminder first.
REMINDERS = ((1, "trial_reminder_1d_sent_at"), (3, "trial_reminder_3d_sent_at"))


def trial_ending_notify(*, subscription: Subscription, days_left: int, occurrence: str) -> bool:
    """Tells the customer their trial ends in `days_left` days (subscription.trial_ending: the
    e-mail and the outbound event), once per `occurrence`. True when told now."""
    ends_at = subscription.trial_ends_at
    told = notify(
        user=subscription.user,
        kind=EventType.SUBSCRIPTION_TRIAL_ENDING,
        occurrence=occurrence,
        subject=f"subscription:{subscription.pk}",
        context={
            "subscription_id": str(subscription.pk),
            "tier": subscription.tier,
            "tier_name": SubscriptionTier(subscription.tier).label,
            "days_left": days_left,
            "trial_ends_at": ends_at.isoformat(),
            "trial_ends_on": f"{ends_at.astimezone(UTC):%-d %B %Y, %H:%M} UTC",
        },
    )
    if told is not None:
        TRIAL_REMINDERS_SENT.labels(days=str(days_left)).inc()
    return told is not None


def _reminder_due(subscription: Subscription, now: datetime) -> tuple[int, str] | None:
    """The one reminder this trial is due now: the latest whose moment has come and is unsent.
    A trial that skipped past the 3-day moment (a short trial, a late job) gets only the 1-day one;
    a moment before the trial began (a trial shorter than 3 days) never comes."""
    for days, field in REMINDERS:
        moment = subscription.trial_ends_at - timedelta(days=days)
        if moment <= now:
            if getattr(subscription, field) or moment < subscription.current_period_start:
                return None
            return days, field
    return None


def trials_due_a_reminder(*, now: datetime) -> list:
    furthest = max(days for days, _ in REMINDERS)
    return list(
        Subscription.objects.filter(
            status=Status.TRIAL,
            cancel_at_period_end=False,
            trial_ends_at__gt=now,
            trial_ends_at__lte=now + timedelta(days=furthest),
        )
        .order_by("trial_ends_at")
        .values_list("pk", flat=True)
    )


@transaction.atomic
def trial_reminder_send(*, subscription_id, now: datetime) -> bool:
    """Tells the customer of the reminder this trial is due, once (the notification is unique per
    trial and reminder day; its e-mail goes once this commits, retried by its task). A trial the
    customer cancelled gets none: it ends anyway."""
    subscription = subscription_lock(subscription_id)
    if subscription.status != Status.TRIAL or subscription.cancel_at_period_end or subscription.trial_ends_at <= now:
        return False
    due = _reminder_due(subscription, now)
    if due is None:
        return False
    days, field = due
    trial_ending_notify(subscription=subscription, days_left=days, occurrence=f"{subscription.pk}:{days}d")
    setattr(subscription, field, now)
    subscription.save(update_fields=[field, "updated_at"])
    return True


@transaction.atomic
def trial_reminder_resend(*, subscription_id, actor) -> int:
    """Staff send the trial reminder again (console action); audited. Returns the days left."""
    subscription = subscription_lock(subscription_id)
    if subscription.status != Status.TRIAL:
        raise Conflict("Only a subscription in its trial gets trial reminders.", code=ErrorCode.NOT_IN_TRIAL)
    seconds_left = (subscription.trial_ends_at - timezone.now()).total_seconds()
    days_left = max(round(seconds_left / 86_400), 0)
    # Each resend is an occurrence of its own: staff asked for this one.
    occurrence = f"{subscription.pk}:resent:{timezone.now().isoformat()}"
    trial_ending_notify(subscription=subscription, days_left=days_left, occurrence=occurrence)
    audit_record(
        action=AuditAction.PROCESS,
        resource_type=resource_type_of(subscription),
        resource_id=str(subscription.pk),
        new_value={"email": "trial_reminder", "days_left": days_left, "to": subscription.user.email},
        actor=actor,
    )
    return days_left


def trials_ended(*, now: datetime) -> list:
    return list(
        Subscription.objects.filter(status=Status.TRIAL, trial_ends_at__lte=now)
        .order_by("trial_ends_at")
        .values_list("pk", flat=True)
    )


@transaction.atomic
def trial_expire(*, subscription_id, now: datetime) -> bool:
    """An ended trial that was not paid: expired (or cancelled, if the customer cancelled it), and
    the user is back on the free tier with its entitlements and credits."""
    subscription = subscription_lock(subscription_id)
    if subscription.status != Status.TRIAL or subscription.trial_ends_at > now:
        return False
    ended = Status.CANCELLED if subscription.cancel_at_period_end else Status.EXPIRED
    subscription_transition(subscription=subscription, status=ended, reason="Trial ended without payment")
    TRIAL_EXPIRATIONS.inc()
    return True
