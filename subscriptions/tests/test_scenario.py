"""Whole billing timelines on a travelling clock: a trial with its reminders, the conversion through
Stripe Checkout, a renewal, a failed payment through dunning to suspension, and the payment that
brings the subscription back. Stripe is the FakeStripeHttp of `stripe_http`; its webhooks are
POSTed signed, as Stripe sends them."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.db.models import Sum
from django.test import TestCase
from rest_framework.test import APIClient

from audit.models import AdminAuditLog
from conftest import access_token_for, bearer
from credits import tasks as credit_tasks
from credits.models import CreditAllocation, UserCreditBalance, UserCreditSource
from payments.models import PaymentEvent, PaymentOperation, WebhookEvent
from payments.services import operations
from payments.tests.stripe_emulator import event_payload, signature_header
from subscriptions import services, tasks
from subscriptions.models import (
    BillingInvoice,
    DunningAttempt,
    PaymentTransaction,
    Subscription,
    UserEntitlement,
)
from subscriptions.periods import add_months

pytestmark = pytest.mark.django_db

WEBHOOK_URL = "/api/v1/billing/webhooks/stripe/"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def tiers(db):
    services.tier_catalog_seed()


def client_for(user) -> APIClient:
    """A client with a token issued now (on the travelling clock, so it is never stale)."""
    client = APIClient()
    client.credentials(**bearer(access_token_for(user)))
    return client


def stripe_delivers(event_type: str, data_object: dict, *, event_id: str):
    """POSTs the event the way Stripe does: the raw JSON body and its Stripe-Signature header."""
    payload = event_payload(event_type, data_object, event_id=event_id)
    return APIClient().post(
        WEBHOOK_URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature_header(payload)
    )


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def stripe_invoice(invoice_id, *, period_start, period_end, paid=True, reason="subscription_cycle", **extra) -> dict:
    """An invoice of `sub_scenario`, shaped like Stripe's: the line carries the period billed (the
    invoice's own period_start/end are the period before, as Stripe reports them for a renewal)."""
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": "cus_scenario",
        "subscription": "sub_scenario",
        "billing_reason": reason,
        "status": "paid" if paid else "open",
        "currency": "usd",
        "amount_due": 1900,
        "amount_paid": 1900 if paid else 0,
        "attempt_count": 1,
        "payment_intent": f"pi_{invoice_id}",
        "period_start": epoch(add_months(period_start, -1)),
        "period_end": epoch(period_start),
        "lines": {
            "object": "list",
            "data": [{"id": f"il_{invoice_id}", "period": {"start": epoch(period_start), "end": epoch(period_end)}}],
        },
        **extra,
    }


def hourly_reminders() -> int:
    with TestCase.captureOnCommitCallbacks(execute=True):  # the reminders' e-mails go after commit
        return tasks.send_trial_reminders.delay().get()


def allocations(subscription) -> list[tuple[datetime, int]]:
    return list(
        CreditAllocation.objects.filter(subscription_id=subscription.pk)
        .order_by("period_start")
        .values_list("period_start", "amount")
    )


def balance_of(user) -> int:
    balance = UserCreditBalance.objects.get(user=user).amount
    live = UserCreditSource.objects.filter(user=user).aggregate(total=Sum("remaining"))["total"]
    assert balance == live  # the ledger invariant holds at every step
    return balance


def transitions(subscription) -> list[tuple[str, str]]:
    rows = AdminAuditLog.objects.filter(
        action="transition", resource_type="subscriptions.subscription", resource_id=str(subscription.pk)
    ).order_by("sequence")
    return [(row.previous_value["status"], row.new_value["status"]) for row in rows]


def entitlement_tier(user) -> str:
    return UserEntitlement.objects.get(user=user).tier


def stripe_pay_requests(stripe_http, invoice_id: str) -> int:
    return len(stripe_http.calls("POST", f"invoices/{invoice_id}/pay"))


def test_trial_conversion_renewal_dunning_suspension_and_recovery_through_stripe(
    stripe_http, django_capture_on_commit_callbacks
):
    with time_machine.travel(T0, tick=False) as clock:
        # given: a customer on the free tier
        user = services.account_register(email="ada@example.com", password="correct horse battery")
        free = Subscription.objects.get(user=user)
        assert (free.tier, free.status, balance_of(user)) == ("free", "active", 2_000)

        # when: they start Pro, which has a 14-day trial
        started = client_for(user).post("/api/v1/subscriptions/", {"tier": "pro"}, format="json")

        # then: a trial, on Pro's entitlements and credits, without any payment
        assert started.status_code == 201, started.json()
        assert started.json()["checkout"] is None
        trial = Subscription.objects.get(pk=started.json()["subscription"]["id"])
        trial_ends_at = T0 + 14 * DAY
        assert (trial.tier, trial.status, trial.trial_ends_at) == ("pro", "trial", trial_ends_at)
        assert (trial.current_period_start, trial.current_period_end) == (T0, trial_ends_at)
        free.refresh_from_db()
        assert free.status == "cancelled"
        assert allocations(trial) == [(T0, 20_000)]
        assert balance_of(user) == 22_000
        entitlement = UserEntitlement.objects.get(user=user)
        assert (entitlement.tier, entitlement.expires_at) == ("pro", trial_ends_at)
        assert not stripe_http.requests
        assert not PaymentEvent.objects.exists()

        # trial reminders: none four days before the end
        clock.move_to(trial_ends_at - 4 * DAY)
        assert hourly_reminders() == 0
        # three days before: one e-mail, in text and HTML, however often the hourly task runs
        clock.move_to(trial_ends_at - 3 * DAY)
        assert hourly_reminders() == 1
        assert hourly_reminders() == 0
        clock.move_to(trial_ends_at - 3 * DAY + timedelta(hours=1))
        assert hourly_reminders() == 0
        (three_days,) = mail.outbox
        assert three_days.to == ["ada@example.com"]
        assert three_days.subject == "Your Pro trial ends in 3 days"
        assert "ends in 3 days" in three_days.body
        ((html, mimetype),) = three_days.alternatives
        assert mimetype == "text/html"
        assert "<strong>3 days</strong>" in html
        clock.move_to(trial_ends_at - 2 * DAY)
        assert hourly_reminders() == 0
        # one day before: the last one, once
        clock.move_to(trial_ends_at - DAY)
        assert hourly_reminders() == 1
        assert hourly_reminders() == 0
        assert [message.subject for message in mail.outbox] == [
            "Your Pro trial ends in 3 days",
            "Your Pro trial ends in 1 day",
        ]
        assert "ends in 1 day," in mail.outbox[1].body
        assert mail.outbox[1].alternatives[0][1] == "text/html"
        trial.refresh_from_db()
        assert (trial.trial_reminder_3d_sent_at, trial.trial_reminder_1d_sent_at) == (
            trial_ends_at - 3 * DAY,
            trial_ends_at - DAY,
        )

        # paid: the customer converts, and is sent to Stripe Checkout
        converted_at = trial_ends_at - DAY + timedelta(hours=1)
        clock.move_to(converted_at)
        checkout = client_for(user).post("/api/v1/subscriptions/", {"tier": "pro"}, format="json")
        assert checkout.status_code == 201, checkout.json()
        assert checkout.json()["subscription"] is None
        session_id = checkout.json()["checkout"]["session_id"]
        assert checkout.json()["checkout"] == {
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "session_id": session_id,
            "completed": False,
            "operation_id": str(PaymentOperation.objects.get(kind="subscription_checkout").pk),
        }
        assert stripe_http.calls() == [("POST", "customers"), ("POST", "checkout/sessions")]
        form = stripe_http.requests[1]["form"]
        assert (form["mode"], form["client_reference_id"]) == ("subscription", str(user.pk))
        assert (form["metadata[kind]"], form["metadata[tier]"], form["metadata[billing_cycle]"]) == (
            "subscription",
            "pro",
            "monthly",
        )
        assert form["line_items[0][price_data][unit_amount]"] == "1900"
        assert form["line_items[0][price_data][recurring][interval]"] == "month"
        trial.refresh_from_db()
        assert trial.status == "trial"  # nothing changes before Stripe says it is paid

        # Stripe reports the paid checkout
        completed = stripe_delivers(
            "checkout.session.completed",
            {
                "id": session_id,
                "object": "checkout.session",
                "mode": "subscription",
                "status": "complete",
                "payment_status": "paid",
                "client_reference_id": str(user.pk),
                "customer": "cus_scenario",
                "subscription": "sub_scenario",
                "invoice": "in_first",
                "payment_intent": None,
                "amount_total": 1900,
                "currency": "usd",
                "metadata": {"kind": "subscription", "tier": "pro", "billing_cycle": "monthly"},
            },
            event_id="evt_checkout",
        )
        assert completed.status_code == 200, completed.json()
        assert completed.json()["status"] == "processed"
        first_end = add_months(converted_at, 1)
        trial.refresh_from_db()
        assert (trial.status, trial.stripe_customer_id, trial.stripe_subscription_id) == (
            "active",
            "cus_scenario",
            "sub_scenario",
        )
        assert (trial.current_period_start, trial.current_period_end) == (converted_at, first_end)
        assert trial.checkout_session_id == session_id
        first_invoice = BillingInvoice.objects.get(stripe_invoice_id="in_first")
        assert (first_invoice.status, first_invoice.amount_paid_usd) == ("paid", Decimal("19.00"))
        assert allocations(trial) == [(T0, 20_000), (converted_at, 20_000)]
        entitlement.refresh_from_db()
        assert (entitlement.tier, entitlement.expires_at) == ("pro", None)
        # Stripe also announces the subscription's first invoice: nothing more is granted
        first_paid = stripe_delivers(
            "invoice.paid",
            stripe_invoice("in_first", period_start=converted_at, period_end=first_end, reason="subscription_create"),
            event_id="evt_first_invoice",
        )
        assert first_paid.status_code == 200
        assert BillingInvoice.objects.filter(stripe_invoice_id="in_first").count() == 1
        assert allocations(trial) == [(T0, 20_000), (converted_at, 20_000)]

        # the trial's end passes: a paid subscription is not expired
        clock.move_to(trial_ends_at + timedelta(hours=1))
        assert tasks.expire_trials.delay().get() == 0
        trial.refresh_from_db()
        assert trial.status == "active"
        assert hourly_reminders() == 0
        assert len(mail.outbox) == 2

        # renewal: Stripe bills the next month, and tells us twice (invoice.paid, and its twin)
        subscription = trial
        second_end = add_months(first_end, 1)
        clock.move_to(first_end + timedelta(minutes=5))
        assert "awaiting_provider: 1" in call_command_output("allocate_monthly_credits", "--no-progress")
        renewal = stripe_invoice("in_renewal", period_start=first_end, period_end=second_end)
        renewed = stripe_delivers("invoice.paid", renewal, event_id="evt_renewal")
        assert renewed.status_code == 200
        assert renewed.json()["replayed"] is False
        again = stripe_delivers("invoice.paid", renewal, event_id="evt_renewal")
        assert again.status_code == 200
        assert again.json()["replayed"] is True
        assert again.json()["result"] == renewed.json()["result"]
        twin = stripe_delivers("invoice.payment_succeeded", renewal, event_id="evt_renewal_twin")
        assert twin.status_code == 200
        assert "allocated: 0" in call_command_output("allocate_monthly_credits", "--no-progress")
        subscription.refresh_from_db()
        assert (subscription.status, subscription.current_period_start) == ("active", first_end)
        assert subscription.current_period_end == second_end
        assert allocations(subscription) == [(T0, 20_000), (converted_at, 20_000), (first_end, 20_000)]
        # the older grants have ended: the balance is exactly this period's credits
        credit_tasks.expire_credits.delay().get()
        assert balance_of(user) == 20_000

        # failed payment: Stripe cannot collect the next month
        failed_at = second_end + timedelta(hours=1)
        third_end = add_months(second_end, 1)
        clock.move_to(failed_at)
        overdue = stripe_invoice("in_overdue", period_start=second_end, period_end=third_end, paid=False)
        stripe_http.invoice_open("in_overdue", customer="cus_scenario", amount=1900, subscription="sub_scenario")
        failed = stripe_delivers("invoice.payment_failed", overdue, event_id="evt_overdue_failed")
        assert failed.status_code == 200
        subscription.refresh_from_db()
        assert subscription.status == "past_due"
        assert subscription.current_period_start == first_end  # the unpaid month has not started
        invoice = BillingInvoice.objects.get(stripe_invoice_id="in_overdue")
        assert (invoice.status, invoice.amount_due_usd, invoice.period_start) == ("open", Decimal("19.00"), second_end)
        payment = PaymentTransaction.objects.get(stripe_payment_intent_id="pi_in_overdue")
        assert payment.status == "failed"
        attempts = DunningAttempt.objects.filter(invoice=invoice).order_by("attempt_number")
        assert [(a.attempt_number, a.scheduled_at, a.result) for a in attempts] == [
            (number, failed_at + days * DAY, "scheduled") for number, days in ((1, 1), (2, 3), (3, 5), (4, 7))
        ]
        assert entitlement_tier(user) == "pro"  # past due keeps its service while we retry

        # dunning: every retry asks Stripe to pay the invoice, and the card is declined each time
        stripe_http.pay_mode = "decline"
        for number, days in ((1, 1), (2, 3), (3, 5), (4, 7)):
            clock.move_to(failed_at + days * DAY - timedelta(minutes=1))
            assert tasks.run_dunning.delay().get() == {}  # not due yet
            clock.move_to(failed_at + days * DAY)
            assert tasks.run_dunning.delay().get() == {"retry_failed": 1}
            assert tasks.run_dunning.delay().get() == {}  # the same hour again: nothing more
            assert stripe_pay_requests(stripe_http, "in_overdue") == number
            attempt = DunningAttempt.objects.get(invoice=invoice, attempt_number=number)
            assert (attempt.result, attempt.attempted_at) == ("failed", failed_at + days * DAY)
            assert attempt.failure_reason == "Your card was declined."
            subscription.refresh_from_db()
            assert subscription.status == ("past_due" if number < 4 else "grace_period")

        # retries exhausted: a grace period of seven days, still on Pro
        exhausted_at = failed_at + 7 * DAY
        assert subscription.grace_period_ends_at == exhausted_at + 7 * DAY
        assert entitlement_tier(user) == "pro"
        clock.move_to(exhausted_at + 7 * DAY - timedelta(minutes=1))
        assert tasks.run_dunning.delay().get() == {}

        # grace over, still unpaid: suspended, on the free tier's entitlements
        clock.move_to(exhausted_at + 7 * DAY)
        with django_capture_on_commit_callbacks(execute=True):
            assert tasks.run_dunning.delay().get() == {"suspended": 1}
        assert tasks.run_dunning.delay().get() == {}
        subscription.refresh_from_db()
        assert (subscription.status, subscription.grace_period_ends_at) == ("suspended", None)
        assert entitlement_tier(user) == "free"
        seen = client_for(user).get("/api/v1/me/entitlements/").json()
        assert (seen["tier"], seen["entitlements"]["api_access"]) == ("free", False)
        assert allocations(subscription)[-1] == (first_end, 20_000)  # no credits for the unpaid month

        # paid again: the customer updates their card and Stripe collects the overdue invoice
        clock.move_to(exhausted_at + 8 * DAY)
        with django_capture_on_commit_callbacks(execute=True):
            recovered = stripe_delivers(
                "invoice.paid",
                stripe_invoice("in_overdue", period_start=second_end, period_end=third_end),
                event_id="evt_overdue_paid",
            )
        assert recovered.status_code == 200, recovered.json()
        subscription.refresh_from_db()
        assert subscription.status == "active"
        assert (subscription.current_period_start, subscription.current_period_end) == (second_end, third_end)
        invoice.refresh_from_db()
        payment.refresh_from_db()
        assert (invoice.status, invoice.amount_paid_usd) == ("paid", Decimal("19.00"))
        assert payment.status == "succeeded"
        assert entitlement_tier(user) == "pro"
        seen = client_for(user).get("/api/v1/me/entitlements/").json()
        assert (seen["tier"], seen["entitlements"]["api_access"]) == ("pro", True)
        assert allocations(subscription)[-1] == (second_end, 20_000)
        credit_tasks.expire_credits.delay().get()
        assert balance_of(user) == 20_000
        assert tasks.run_dunning.delay().get() == {}
        assert stripe_pay_requests(stripe_http, "in_overdue") == 4

    # the record: every status change audited, one PaymentEvent per movement of money or failed
    # payment (none for a replay, none for a second event about the same payment)
    assert transitions(free) == [("active", "cancelled")]
    converted = AdminAuditLog.objects.filter(action="transition", resource_id=str(subscription.pk)).earliest("sequence")
    assert (converted.previous_value["current_period_start"], converted.previous_value["stripe_subscription_id"]) == (
        T0.isoformat().replace("+00:00", "Z"),
        None,
    )
    assert (converted.new_value["current_period_start"], converted.new_value["stripe_subscription_id"]) == (
        converted_at.isoformat().replace("+00:00", "Z"),
        "sub_scenario",
    )
    assert transitions(subscription) == [
        ("trial", "active"),
        ("active", "past_due"),
        ("past_due", "grace_period"),
        ("grace_period", "suspended"),
        ("suspended", "active"),
    ]
    assert sorted(PaymentEvent.objects.values_list("webhook_event__event_id", "event_type", "invoice_id")) == [
        ("evt_checkout", "checkout_completed", "in_first"),
        ("evt_overdue_failed", "invoice_payment_failed", "in_overdue"),
        ("evt_overdue_paid", "invoice_paid", "in_overdue"),
        ("evt_renewal", "invoice_paid", "in_renewal"),
    ]
    assert set(PaymentEvent.objects.values_list("user", flat=True)) == {user.pk}
    assert WebhookEvent.objects.count() == 6
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}
    assert DunningAttempt.objects.filter(result="failed").count() == 4


def call_command_output(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_offline_billed_subscription_recovers_on_its_first_dunning_retry(monkeypatch):
    with time_machine.travel(T0, tick=False) as clock:
        # given: a customer who took the Pro trial and paid for it through the offline provider
        user = services.account_register(email="grace@example.com", password="correct horse battery")
        client_for(user).post("/api/v1/subscriptions/", {"tier": "pro"}, format="json")
        clock.move_to(T0 + 2 * DAY)
        paid = client_for(user).post("/api/v1/subscriptions/", {"tier": "pro"}, format="json")
        assert paid.status_code == 201, paid.json()
        assert paid.json()["checkout"]["completed"] is True
        assert paid.json()["checkout"]["url"] is None
        subscription = Subscription.objects.get(pk=paid.json()["subscription"]["id"])
        start, end = T0 + 2 * DAY, add_months(T0 + 2 * DAY, 1)
        assert (subscription.status, subscription.current_period_start, subscription.stripe_subscription_id) == (
            "active",
            start,
            None,
        )

        # when: the month is over and the renewal charge is declined (the offline provider never
        # declines on its own, so this once it is told to)
        def declined(operation):
            return operations.Outcome(operations.FAILED, reason="The card was declined.")

        failed_at = end + timedelta(minutes=10)
        clock.move_to(failed_at)
        with monkeypatch.context() as patched:
            patched.setattr(operations, "offline_outcome", declined)
            assert tasks.allocate_monthly_credits.delay().get() == {"payment_failed": 1}

        # then: past due, the renewal invoice open, four retries scheduled
        subscription.refresh_from_db()
        assert subscription.status == "past_due"
        invoice = BillingInvoice.objects.get(status="open")
        assert (invoice.period_start, invoice.period_end) == (end, add_months(end, 1))
        assert PaymentTransaction.objects.get(invoice=invoice).failure_reason == "The card was declined."
        assert DunningAttempt.objects.filter(invoice=invoice, result="scheduled").count() == 4

        # the first retry, a day later, goes through the offline provider and succeeds
        clock.move_to(failed_at + DAY)
        assert tasks.run_dunning.delay().get() == {"retry_succeeded": 1}
        subscription.refresh_from_db()
        invoice.refresh_from_db()
        assert subscription.status == "active"
        assert (subscription.current_period_start, subscription.current_period_end) == (end, add_months(end, 1))
        assert (invoice.status, invoice.amount_paid_usd) == ("paid", Decimal("19.00"))
        assert list(
            DunningAttempt.objects.filter(invoice=invoice).order_by("attempt_number").values_list("result", flat=True)
        ) == ["succeeded", "cancelled", "cancelled", "cancelled"]
        assert entitlement_tier(user) == "pro"

        # and the renewed period is allocated once, whatever runs afterwards
        assert tasks.allocate_monthly_credits.delay().get() == {"allocated": 0}
        clock.move_to(failed_at + 7 * DAY)
        assert tasks.run_dunning.delay().get() == {}
        assert tasks.allocate_monthly_credits.delay().get() == {"allocated": 0}
        assert allocations(subscription) == [(T0, 20_000), (start, 20_000), (end, 20_000)]
        assert BillingInvoice.objects.filter(subscription=subscription, period_start=end).count() == 1

    assert transitions(subscription) == [("trial", "active"), ("active", "past_due"), ("past_due", "active")]
