"""Trials: the reminder e-mails 3 days and 1 day before the end, the hourly expiry of unpaid trials
(back to the free tier), and the staff resend."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.test import TestCase
from prometheus_client import REGISTRY

from audit.models import AdminAuditLog
from billing_project.errors import Conflict
from billing_project.models import Notification, OutboundEvent
from credits.models import CreditAllocation
from subscriptions import jobs, selectors, services, tasks
from subscriptions.models import Subscription, TierConfig, UserEntitlement

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
TRIAL_END = T0 + 14 * DAY


@pytest.fixture(autouse=True)
def tiers(db):
    services.tier_catalog_seed()


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def trial_started(email: str = "ada@example.com") -> Subscription:
    user = services.account_register(email=email, password="correct horse battery")
    return services.subscription_start(user=user, tier="pro").subscription


def reminders_run() -> int:
    """The hourly task, and what it leaves for after its commit: the reminders' e-mails."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return tasks.send_trial_reminders.delay().get()


def reminder_days() -> list[int]:
    """The days each sent reminder announces, in the order sent (from the subject)."""
    return [int(message.subject.split(" ends in ")[1].split()[0]) for message in mail.outbox]


def expirations() -> float:
    return REGISTRY.get_sample_value("trial_expirations_total") or 0


def run(*args) -> str:
    out = StringIO()
    with TestCase.captureOnCommitCallbacks(execute=True):
        call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def transitions(subscription) -> list[tuple[str, str]]:
    rows = AdminAuditLog.objects.filter(action="transition", resource_id=str(subscription.pk)).order_by("sequence")
    return [(row.previous_value["status"], row.new_value["status"]) for row in rows]


# Reminders


@pytest.mark.parametrize(
    ("before_end", "sent"),
    [
        (4 * DAY, []),
        (3 * DAY + timedelta(seconds=1), []),
        (3 * DAY, [3]),
        (2 * DAY + timedelta(hours=23), [3]),
        (DAY + timedelta(seconds=1), [3]),
        (DAY, [1]),  # the 3-day moment has passed unsent: only the 1-day reminder goes
        (timedelta(minutes=1), [1]),
        (timedelta(0), []),  # ended: the expiry job's business, not a reminder's
    ],
)
def test_the_reminder_sent_depends_on_the_time_left(clock, before_end, sent):
    trial_started()

    clock.move_to(TRIAL_END - before_end)
    assert reminders_run() == len(sent)

    assert reminder_days() == sent


def test_an_hourly_job_over_the_whole_trial_sends_each_reminder_once(clock):
    subscription = trial_started()

    sent_at = []
    for hour in range(14 * 24 + 2):
        clock.move_to(T0 + timedelta(hours=hour))
        if reminders_run():
            sent_at.append(T0 + timedelta(hours=hour))

    assert sent_at == [TRIAL_END - 3 * DAY, TRIAL_END - DAY]
    assert reminder_days() == [3, 1]
    subscription.refresh_from_db()
    assert subscription.trial_reminder_3d_sent_at == TRIAL_END - 3 * DAY
    assert subscription.trial_reminder_1d_sent_at == TRIAL_END - DAY


def test_a_reminder_is_an_html_and_text_email_naming_the_days_and_the_end(clock):
    subscription = trial_started()

    clock.move_to(TRIAL_END - DAY)
    with TestCase.captureOnCommitCallbacks(execute=True):
        jobs.trial_reminders_send()

    (message,) = mail.outbox
    assert message.to == [subscription.user.email]
    assert message.subject == "Your Pro trial ends in 1 day"
    assert "Your Pro trial ends in 1 day, on 16 March 2026, 09:00" in message.body
    ((html, mimetype),) = message.alternatives
    assert mimetype == "text/html"
    assert "<strong>1 day</strong>" in html
    assert "16 March 2026, 09:00" in html


def test_a_reminder_is_one_trial_ending_notification_and_event_even_when_its_send_runs_twice(clock):
    subscription = trial_started()
    clock.move_to(TRIAL_END - DAY)

    with TestCase.captureOnCommitCallbacks(execute=True):
        assert services.trial_reminder_send(subscription_id=subscription.pk, now=TRIAL_END - DAY)
    # the job's mark lost (a restore, a hand edit): the notification still goes once
    Subscription.objects.filter(pk=subscription.pk).update(trial_reminder_1d_sent_at=None)
    with TestCase.captureOnCommitCallbacks(execute=True):
        services.trial_reminder_send(subscription_id=subscription.pk, now=TRIAL_END - DAY)

    assert len(mail.outbox) == 1
    (notification,) = Notification.objects.filter(kind="subscription.trial_ending")
    assert notification.occurrence == f"{subscription.pk}:1d"
    (event,) = OutboundEvent.objects.filter(type="subscription.trial_ending")
    assert (event.subject, event.user) == (f"subscription:{subscription.pk}", subscription.user)
    assert event.data == {
        "subscription_id": str(subscription.pk),
        "tier": "pro",
        "tier_name": "Pro",
        "days_left": 1,
        "trial_ends_at": TRIAL_END.isoformat(),
        "trial_ends_on": "16 March 2026, 09:00 UTC",
    }


def test_a_trial_shorter_than_three_days_gets_only_the_one_day_reminder(clock):
    TierConfig.objects.filter(tier="pro").update(trial_days=2)
    subscription = trial_started()

    for hour in range(2 * 24 + 2):
        clock.move_to(T0 + timedelta(hours=hour))
        reminders_run()

    assert reminder_days() == [1]
    subscription.refresh_from_db()
    assert subscription.trial_reminder_3d_sent_at is None
    assert subscription.trial_reminder_1d_sent_at == T0 + DAY


def test_a_trial_the_customer_cancelled_gets_no_reminder(clock):
    subscription = trial_started()
    services.subscription_cancel(subscription_id=subscription.pk, user=subscription.user)

    for before_end in (3 * DAY, DAY):
        clock.move_to(TRIAL_END - before_end)
        assert reminders_run() == 0

    assert mail.outbox == []


@pytest.mark.parametrize("ended_by", ["staff_cancel", "payment"])
def test_a_trial_that_ended_gets_no_reminder(clock, staff_user, ended_by):
    subscription = trial_started()
    if ended_by == "staff_cancel":
        services.subscription_cancel(subscription_id=subscription.pk, user=staff_user, immediately=True)
    else:  # converted through the offline provider's checkout
        services.subscription_start(user=subscription.user, tier="pro")
    subscription.refresh_from_db()
    assert subscription.status == ("cancelled" if ended_by == "staff_cancel" else "active")

    for before_end in (3 * DAY, DAY):
        clock.move_to(TRIAL_END - before_end)
        assert reminders_run() == 0

    assert mail.outbox == []


# The end of a trial


def test_an_ended_unpaid_trial_expires_to_the_free_tier(clock):
    subscription = trial_started()
    user = subscription.user
    counted = expirations()

    clock.move_to(TRIAL_END - timedelta(seconds=1))
    assert tasks.expire_trials.delay().get() == 0
    clock.move_to(TRIAL_END + timedelta(minutes=30))
    assert tasks.expire_trials.delay().get() == 1
    assert tasks.expire_trials.delay().get() == 0

    subscription.refresh_from_db()
    assert subscription.status == "expired"
    assert transitions(subscription) == [("trial", "expired")]
    free = selectors.subscription_live_for(user=user)
    assert (free.tier, free.status) == ("free", "active")
    assert (free.current_period_start, free.current_period_end) == (
        TRIAL_END + timedelta(minutes=30),
        datetime(2026, 4, 16, 9, 30, tzinfo=UTC),
    )
    assert list(CreditAllocation.objects.filter(subscription_id=free.pk).values_list("amount", "period_start")) == [
        (2_000, TRIAL_END + timedelta(minutes=30))
    ]
    entitlement = UserEntitlement.objects.get(user=user)
    assert (entitlement.tier, entitlement.expires_at) == ("free", None)
    assert entitlement.entitlements == TierConfig.objects.get(tier="free").entitlements
    assert selectors.user_tier(user=user) == "free"
    assert expirations() == counted + 1


def test_a_trial_the_customer_cancelled_ends_as_cancelled(clock):
    subscription = trial_started()
    services.subscription_cancel(subscription_id=subscription.pk, user=subscription.user)

    clock.move_to(TRIAL_END)
    assert services.trial_expire(subscription_id=subscription.pk, now=TRIAL_END) is True

    subscription.refresh_from_db()
    assert (subscription.status, subscription.cancelled_at) == ("cancelled", TRIAL_END)
    assert selectors.subscription_live_for(user=subscription.user).tier == "free"
    assert UserEntitlement.objects.get(user=subscription.user).tier == "free"


def test_a_converted_trial_is_not_expired(clock):
    subscription = trial_started()
    clock.move_to(T0 + 5 * DAY)
    services.subscription_start(user=subscription.user, tier="pro")  # offline checkout: paid at once
    counted = expirations()

    clock.move_to(TRIAL_END + DAY)
    assert tasks.expire_trials.delay().get() == 0
    assert services.trial_expire(subscription_id=subscription.pk, now=TRIAL_END + DAY) is False

    subscription.refresh_from_db()
    assert (subscription.status, subscription.tier) == ("active", "pro")
    assert UserEntitlement.objects.get(user=subscription.user).tier == "pro"
    assert expirations() == counted


def test_a_trial_still_running_is_not_expired(clock):
    subscription = trial_started()

    clock.move_to(TRIAL_END - timedelta(minutes=1))
    assert services.trial_expire(subscription_id=subscription.pk, now=TRIAL_END - timedelta(minutes=1)) is False

    subscription.refresh_from_db()
    assert subscription.status == "trial"


def test_expire_trials_command_sends_due_reminders_and_expires_ended_trials(clock):
    ended = trial_started("ended@example.com")
    clock.move_to(T0 + 3 * DAY)
    running = trial_started("running@example.com")
    counted = expirations()

    clock.move_to(TRIAL_END)  # the first trial ends; the second is 3 days from its end
    output = run("expire_trials", "--no-progress")

    assert output.strip() == "Sent 1 trial reminders; expired 1 trials."
    assert Subscription.objects.get(pk=ended.pk).status == "expired"
    assert Subscription.objects.get(pk=running.pk).status == "trial"
    assert [message.to for message in mail.outbox] == [["running@example.com"]]
    assert expirations() == counted + 1
    assert run("expire_trials", "--no-progress").strip() == "Sent 0 trial reminders; expired 0 trials."


def test_expire_trials_dry_run_changes_nothing(clock):
    subscription = trial_started()
    counted = expirations()
    audit_rows = AdminAuditLog.objects.count()

    clock.move_to(TRIAL_END + DAY)
    output = run("expire_trials", "--dry-run")

    assert output.strip() == "Would expire 1 trials."
    subscription.refresh_from_db()
    assert subscription.status == "trial"
    assert Subscription.objects.filter(user=subscription.user).count() == 2  # the replaced free one and the trial
    assert AdminAuditLog.objects.count() == audit_rows
    assert UserEntitlement.objects.get(user=subscription.user).tier == "pro"
    assert expirations() == counted
    assert mail.outbox == []


# Staff resend


def test_staff_resend_the_reminder_and_it_is_audited(clock, staff_user):
    subscription = trial_started()
    clock.move_to(T0 + 4 * DAY)

    with TestCase.captureOnCommitCallbacks(execute=True):
        days_left = services.trial_reminder_resend(subscription_id=subscription.pk, actor=staff_user)

    assert days_left == 10
    (message,) = mail.outbox
    assert (message.to, message.subject) == ([subscription.user.email], "Your Pro trial ends in 10 days")
    row = AdminAuditLog.objects.filter(action="process").get()
    assert (row.actor, row.actor_email) == (staff_user, staff_user.email)
    assert (row.resource_type, row.resource_id) == ("subscriptions.subscription", str(subscription.pk))
    assert row.new_value == {"email": "trial_reminder", "days_left": 10, "to": subscription.user.email}
    subscription.refresh_from_db()
    assert subscription.trial_reminder_3d_sent_at is None  # a resend does not stand in for the scheduled ones


def test_staff_resend_is_refused_for_a_subscription_not_in_trial(clock, staff_user):
    user = services.account_register(email="free@example.com", password="correct horse battery")
    free = selectors.subscription_live_for(user=user)
    audit_rows = AdminAuditLog.objects.count()

    with pytest.raises(Conflict) as refused:
        services.trial_reminder_resend(subscription_id=free.pk, actor=staff_user)

    assert (refused.value.status, refused.value.code) == (409, "not_in_trial")
    assert mail.outbox == []
    assert AdminAuditLog.objects.count() == audit_rows
