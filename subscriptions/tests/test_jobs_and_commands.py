"""The periodic subscription jobs as ops run them: `manage.py allocate_monthly_credits`, `expire_trials`
and `replay_webhook`, the Celery tasks behind them and their beat schedule."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from celery.exceptions import Retry
from celery.schedules import crontab
from django.conf import settings
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from audit.models import AdminAuditLog
from billing_project.celery import app
from billing_project.tests.factories import UserFactory
from credits.models import CreditAllocation, UserCreditBalance
from payments.models import PaymentOperation
from payments.tests.helpers import checkout_paid
from payments.tests.stripe_emulator import event_payload, signature_header
from subscriptions import jobs, selectors, services, tasks
from subscriptions.models import BillingInvoice, DunningAttempt, PaymentTransaction, Subscription, TierConfig
from subscriptions.periods import add_months
from subscriptions.tests.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SUBSCRIPTION_TASKS = [
    tasks.allocate_monthly_credits,
    tasks.expire_trials,
    tasks.send_trial_reminders,
    tasks.run_dunning,
]


@pytest.fixture(autouse=True)
def tiers(db):
    services.tier_catalog_seed()
    TierConfig.objects.filter(tier="pro").update(trial_days=0)  # straight to a paid checkout


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def run_job(*args) -> str:
    return run(*args, "--no-progress")


def registered(email: str = "ada@example.com"):
    return services.account_register(email=email, password="correct horse battery")


def paid_pro(email: str = "ada@example.com", *, billing_cycle: str = "monthly", tier: str = "pro") -> Subscription:
    """A paid subscription through the offline provider: no Stripe subscription bills it."""
    started = services.subscription_start(user=registered(email), tier=tier, billing_cycle=billing_cycle)
    assert started.checkout.completed
    return started.subscription


def allocations(subscription) -> list[tuple]:
    return list(
        CreditAllocation.objects.filter(subscription_id=subscription.pk)
        .order_by("period_start")
        .values_list("period_start", "period_end", "expires_at", "amount")
    )


def period_of(subscription) -> tuple[datetime, datetime]:
    subscription.refresh_from_db()
    return subscription.current_period_start, subscription.current_period_end


# allocate_monthly_credits


def test_allocation_grants_a_missing_period_once_however_often_it_runs(clock):
    subscription = SubscriptionFactory(user=UserFactory(), current_period_start=T0)  # its allocation was missed

    clock.move_to(T0 + timedelta(hours=1))
    first = run_job("allocate_monthly_credits")
    second = run_job("allocate_monthly_credits")

    assert first == "Done (allocated: 1)."
    assert second == "Done (allocated: 0)."
    assert allocations(subscription) == [(T0, T0 + 30 * DAY, T0 + 30 * DAY, 20_000)]
    assert UserCreditBalance.objects.get(user=subscription.user).amount == 20_000


def test_a_free_plan_renews_from_the_end_of_its_period_with_free_credits(clock):
    user = registered()
    free = selectors.subscription_live_for(user=user)
    end = add_months(T0, 1)

    clock.move_to(end + timedelta(hours=3))
    assert run_job("allocate_monthly_credits") == "Done (allocated: 0, renewed: 1)."
    assert run_job("allocate_monthly_credits") == "Done (allocated: 0)."

    assert period_of(free) == (end, add_months(end, 1))
    assert free.status == "active"
    assert allocations(free) == [(T0, end, end, 2_000), (end, add_months(end, 1), add_months(end, 1), 2_000)]
    assert not BillingInvoice.objects.exists()  # the free tier is never invoiced


def test_a_free_plan_left_for_months_renews_into_the_period_containing_now(clock):
    start = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
    clock.move_to(start)
    free = selectors.subscription_live_for(user=registered())

    clock.move_to(add_months(start, 3) + 5 * DAY)
    assert run_job("allocate_monthly_credits") == "Done (allocated: 0, renewed: 1)."

    assert period_of(free) == (add_months(start, 3), add_months(start, 4))
    assert [row[0] for row in allocations(free)] == [start, add_months(start, 3)]  # past months are not back-filled


def test_an_offline_billed_paid_plan_is_charged_and_renewed_once(clock):
    subscription = paid_pro()
    end = add_months(T0, 1)

    clock.move_to(end + timedelta(minutes=10))
    assert run_job("allocate_monthly_credits") == "Done (allocated: 0, renewed: 1)."
    assert run_job("allocate_monthly_credits") == "Done (allocated: 0)."

    assert period_of(subscription) == (end, add_months(end, 1))
    renewal = BillingInvoice.objects.get(subscription=subscription, period_start=end)
    assert (renewal.status, renewal.amount_paid_usd, renewal.period_end) == (
        "paid",
        Decimal("19.00"),
        add_months(end, 1),
    )
    assert PaymentTransaction.objects.get(invoice=renewal).status == "succeeded"
    assert BillingInvoice.objects.filter(subscription=subscription).count() == 2  # the checkout's and the renewal
    assert [row[0] for row in allocations(subscription)] == [T0, end]
    renewed = AdminAuditLog.objects.filter(action="update", resource_id=str(subscription.pk)).get()
    assert renewed.new_value["reason"] == "Renewed for a new period"


def test_a_downgrade_scheduled_for_the_period_end_is_charged_and_applied_at_renewal(clock):
    TierConfig.objects.filter(tier="pro_max").update(trial_days=0)
    subscription = paid_pro(tier="pro_max")
    clock.move_to(T0 + 10 * DAY)
    services.tier_change(subscription_id=subscription.pk, user=subscription.user, tier="pro")
    end = add_months(T0, 1)

    clock.move_to(end + timedelta(minutes=10))
    assert run_job("allocate_monthly_credits") == "Done (allocated: 0, renewed: 1)."

    subscription.refresh_from_db()
    assert (subscription.tier, subscription.base_price_usd, subscription.scheduled_tier) == ("pro", Decimal("19"), "")
    assert BillingInvoice.objects.get(period_start=end).amount_paid_usd == Decimal("19.00")
    assert allocations(subscription)[-1] == (end, add_months(end, 1), add_months(end, 1), 20_000)


def paid_through_stripe_checkout(user, *, stripe_subscription_id: str = "") -> Subscription:
    checkout_paid(
        user=user,
        metadata={"kind": "subscription", "tier": "pro", "billing_cycle": "monthly"},
        amount_cents=1900,
        session_id="cs_test_1",
        customer="cus_1",
        subscription=stripe_subscription_id,
    )
    return Subscription.objects.get(checkout_session_id="cs_test_1")


def test_a_stripe_billed_plan_is_left_to_its_invoice_webhook(clock, stripe_http):
    user = registered()
    subscription = paid_through_stripe_checkout(user, stripe_subscription_id="sub_1")
    before = allocations(subscription)

    clock.move_to(add_months(T0, 1) + timedelta(minutes=10))
    assert run_job("allocate_monthly_credits") == "Done (awaiting_provider: 1)."

    assert period_of(subscription) == (T0, add_months(T0, 1))
    assert subscription.status == "active"
    assert allocations(subscription) == before
    assert BillingInvoice.objects.count() == 1
    assert stripe_http.requests == []


@pytest.mark.parametrize("declined", [False, True])
def test_a_plan_billed_by_one_off_stripe_charges_is_charged_on_the_saved_card(
    clock, stripe_http, declined, django_capture_on_commit_callbacks
):
    user = registered()
    subscription = paid_through_stripe_checkout(user)
    end = add_months(T0, 1)
    if declined:
        stripe_http.pay_mode = "decline"

    clock.move_to(end + timedelta(minutes=10))
    with django_capture_on_commit_callbacks(execute=True):
        output = run_job("allocate_monthly_credits")

    # an empty invoice of its own, the renewal attached to it, then paid: each under the operation's key
    operation = PaymentOperation.objects.get(kind="renewal_charge")
    invoice_id = operation.stripe_invoice_id
    assert stripe_http.calls() == [
        ("POST", "invoices"),
        ("POST", "invoiceitems"),
        ("POST", f"invoices/{invoice_id}/pay"),
        *([("GET", f"invoices/{invoice_id}"), ("POST", f"invoices/{invoice_id}/void")] if declined else []),
    ]
    invoice_request, item_request, pay_request = stripe_http.requests[:3]
    assert (invoice_request["form"]["customer"], invoice_request["form"]["pending_invoice_items_behavior"]) == (
        "cus_1",
        "exclude",
    )
    assert (item_request["form"]["amount"], item_request["form"]["invoice"]) == ("1900", invoice_id)
    assert [request["headers"]["Idempotency-Key"] for request in (invoice_request, item_request, pay_request)] == [
        f"op_{operation.pk}:invoice",
        f"op_{operation.pk}:item",
        f"op_{operation.pk}:pay",
    ]
    subscription.refresh_from_db()
    if declined:
        assert output == "Done (payment_failed: 1)."
        assert subscription.status == "past_due"
        invoice = BillingInvoice.objects.get(period_start=end)
        assert (invoice.status, invoice.stripe_invoice_id) == ("open", None)
        assert DunningAttempt.objects.filter(invoice=invoice, result="scheduled").count() == 4
        assert [row[0] for row in allocations(subscription)] == [T0]
        assert stripe_http.object(invoice_id)["status"] == "void"
        assert (operation.state, operation.effect) == ("failed", "failed")
    else:
        assert output == "Done (allocated: 0, renewed: 1)."
        assert (subscription.status, subscription.current_period_start) == ("active", end)
        invoice = BillingInvoice.objects.get(period_start=end)
        assert (invoice.status, invoice.stripe_invoice_id) == ("paid", invoice_id)
        assert [row[0] for row in allocations(subscription)] == [T0, end]
        assert stripe_http.charges == [{"invoice": invoice_id, "amount": 1900}]


def test_cancel_at_period_end_takes_effect_when_the_period_ends(clock):
    subscription = paid_pro()
    services.subscription_cancel(subscription_id=subscription.pk, user=subscription.user)
    end = add_months(T0, 1)

    clock.move_to(end - timedelta(minutes=1))
    assert run_job("allocate_monthly_credits") == "Done (allocated: 0)."
    assert Subscription.objects.get(pk=subscription.pk).status == "active"
    clock.move_to(end + timedelta(minutes=1))
    assert run_job("allocate_monthly_credits") == "Done (allocated: 0, cancelled: 1)."

    subscription.refresh_from_db()
    assert (subscription.status, subscription.cancelled_at) == ("cancelled", end + timedelta(minutes=1))
    free = selectors.subscription_live_for(user=subscription.user)
    assert (free.tier, free.current_period_start) == ("free", end + timedelta(minutes=1))
    assert [row[3] for row in allocations(free)] == [2_000]
    assert subscription.user.entitlement.tier == "free"
    assert not BillingInvoice.objects.filter(period_start__gte=end).exists()  # nothing charged


def test_allocate_dry_run_counts_and_writes_nothing(clock):
    free = selectors.subscription_live_for(user=registered())
    paid = paid_pro("paid@example.com")
    rows = (CreditAllocation.objects.count(), AdminAuditLog.objects.count(), BillingInvoice.objects.count())

    clock.move_to(add_months(T0, 1) + DAY)
    output = run_job("allocate_monthly_credits", "--dry-run")

    assert output == "2 periods are over; 0 subscriptions would have their current period checked."
    assert (CreditAllocation.objects.count(), AdminAuditLog.objects.count(), BillingInvoice.objects.count()) == rows
    assert period_of(free) == period_of(paid) == (T0, add_months(T0, 1))


def test_an_annual_plan_gets_its_credits_month_by_month(clock):
    subscription = paid_pro(billing_cycle="annual")
    assert period_of(subscription) == (T0, add_months(T0, 12))
    # months are counted from the start: Jan 31, Feb 28, Mar 31, Apr 30
    feb, mar, apr = (add_months(T0, months) for months in (1, 2, 3))
    assert (feb.day, mar.day, apr.day) == (28, 31, 30)

    clock.move_to(feb - timedelta(minutes=1))
    assert run_job("allocate_monthly_credits") == "Done (allocated: 0)."
    clock.move_to(feb + DAY)
    assert run_job("allocate_monthly_credits") == "Done (allocated: 1)."
    assert run_job("allocate_monthly_credits") == "Done (allocated: 0)."
    clock.move_to(mar + timedelta(hours=1))
    assert run_job("allocate_monthly_credits") == "Done (allocated: 1)."

    assert allocations(subscription) == [
        (T0, feb, feb, 20_000),
        (feb, mar, mar, 20_000),
        (mar, apr, apr, 20_000),
    ]
    assert period_of(subscription) == (T0, add_months(T0, 12))
    assert BillingInvoice.objects.get(subscription=subscription).amount_paid_usd == Decimal("190.00")


# expire_trials and replay_webhook


def test_expire_trials_reports_what_it_did(clock):
    TierConfig.objects.filter(tier="pro").update(trial_days=14)
    trial = services.subscription_start(user=registered(), tier="pro").subscription
    assert run_job("expire_trials") == "Sent 0 trial reminders; expired 0 trials."

    clock.move_to(T0 + 11 * DAY)
    assert run_job("expire_trials") == "Sent 1 trial reminders; expired 0 trials."
    clock.move_to(T0 + 14 * DAY)
    assert run_job("expire_trials", "--dry-run") == "Would expire 1 trials."
    assert run_job("expire_trials") == "Sent 0 trial reminders; expired 1 trials."
    assert run_job("expire_trials") == "Sent 0 trial reminders; expired 0 trials."

    assert Subscription.objects.get(pk=trial.pk).status == "expired"


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["replay", "dry_run"])
def test_replay_webhook_of_an_unknown_event_fails(dry_run):
    with pytest.raises(CommandError, match="No stored webhook event evt_missing"):
        run("replay_webhook", "evt_missing", *dry_run)


def deliver(event_type: str, data_object: dict, *, event_id: str):
    payload = event_payload(event_type, data_object, event_id=event_id)
    return APIClient().post(
        "/api/v1/billing/webhooks/stripe/",
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature_header(payload),
    )


def test_replay_webhook_processes_an_unmatched_event_once_its_subscription_is_known(clock, stripe_http):
    user = registered()
    invoice = {
        "id": "in_early",
        "object": "invoice",
        "customer": "cus_1",
        "subscription": "sub_1",
        "billing_reason": "subscription_create",
        "amount_paid": 1900,
        "currency": "usd",
        "period_start": int(T0.timestamp()),
        "period_end": int(add_months(T0, 1).timestamp()),
        "lines": {"object": "list", "data": []},
    }
    early = deliver("invoice.paid", invoice, event_id="evt_early")  # before its checkout was recorded
    assert (early.status_code, early.json()["status"]) == (200, "unmatched")
    with pytest.raises(CommandError, match="evt_early is still unmatched: No subscription sub_1 here"):
        run("replay_webhook", "evt_early")

    paid_through_stripe_checkout(user, stripe_subscription_id="sub_1")
    audit_rows = AdminAuditLog.objects.count()
    assert run("replay_webhook", "evt_early", "--dry-run") == "Would replay evt_early (invoice.paid), now unmatched."
    assert AdminAuditLog.objects.count() == audit_rows
    assert not BillingInvoice.objects.filter(stripe_invoice_id="in_early").exists()
    output = run("replay_webhook", "evt_early")

    assert output.startswith("evt_early (invoice.paid): processed, result {'action': 'invoice_paid'")
    assert BillingInvoice.objects.get(stripe_invoice_id="in_early").status == "paid"
    replays = AdminAuditLog.objects.filter(resource_type="payments.webhookevent", new_value__replay=True)
    assert [row.new_value["status"] for row in replays.order_by("sequence")] == ["unmatched", "processed"]
    assert run("replay_webhook", "evt_early").startswith("evt_early (invoice.paid): processed")


# Celery tasks and their schedule


def test_the_subscription_tasks_run_the_jobs_and_return_their_outcomes(clock):
    free = selectors.subscription_live_for(user=registered("free@example.com"))
    TierConfig.objects.filter(tier="pro").update(trial_days=14)
    trial = services.subscription_start(user=registered("trial@example.com"), tier="pro").subscription

    clock.move_to(add_months(T0, 1) + timedelta(hours=1))
    assert tasks.send_trial_reminders.delay().get() == 0
    assert tasks.expire_trials.delay().get() == 1
    assert tasks.allocate_monthly_credits.delay().get() == {"renewed": 1, "allocated": 0}
    assert tasks.run_dunning.delay().get() == {}

    assert Subscription.objects.get(pk=trial.pk).status == "expired"
    assert period_of(free) == (add_months(T0, 1), add_months(add_months(T0, 1), 1))
    assert tasks.expire_trials.delay().get() == 0
    assert tasks.allocate_monthly_credits.delay().get() == {"allocated": 0}


@pytest.mark.parametrize("task", SUBSCRIPTION_TASKS, ids=lambda task: task.name)
def test_each_task_acks_late_and_retries_with_backoff(task):
    assert task.name.startswith("subscriptions.tasks.")
    assert task.acks_late is True
    assert task.autoretry_for == (Exception,)
    assert task.retry_backoff is True
    assert task.max_retries == 5


def test_a_task_that_fails_asks_to_be_retried(monkeypatch):
    def failing(**kwargs):
        raise ConnectionError("the database went away")

    monkeypatch.setattr(jobs, "trials_expire", failing)

    # a worker schedules the retry with backoff; run eagerly, the request to retry is raised
    with pytest.raises(Retry) as retry:
        tasks.expire_trials.delay()

    assert isinstance(retry.value.exc, ConnectionError)


def test_the_beat_schedule_runs_each_subscription_job(clock):
    schedule = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    daily = schedule["subscriptions.tasks.allocate_monthly_credits"]
    assert isinstance(daily, crontab)
    assert (daily.hour, daily.minute) == ({0}, {10})
    assert (len(daily.day_of_week), len(daily.day_of_month), len(daily.month_of_year)) == (7, 31, 12)
    for hourly in ("expire_trials", "send_trial_reminders", "run_dunning"):
        assert schedule[f"subscriptions.tasks.{hourly}"] == timedelta(hours=1)
    assert {task.name for task in SUBSCRIPTION_TASKS} <= set(schedule)
    assert {task.name for task in SUBSCRIPTION_TASKS} <= set(app.tasks)
    assert app.conf.beat_schedule == settings.CELERY_BEAT_SCHEDULE
