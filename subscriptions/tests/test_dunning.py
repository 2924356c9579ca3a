"""Dunning: a failed payment is retried on days 1, 3, 5 and 7 (through Stripe's invoice pay, or the
offline provider); exhausted retries start a 7-day grace period, and its end suspends the
subscription. A payment at any point stops it all."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction
from rest_framework.test import APIClient

from audit.models import AdminAuditLog
from billing_project.money import usd_to_cents
from conftest import run_concurrently
from credits.models import CreditAllocation
from payments.models import PaymentOperation
from payments.tests.helpers import checkout_paid
from payments.tests.stripe_emulator import event_payload, signature_header
from subscriptions import services
from subscriptions.models import BillingInvoice, DunningAttempt, PaymentTransaction, Subscription, UserEntitlement
from subscriptions.periods import add_months
from subscriptions.services import billing, webhooks
from subscriptions.services.lifecycle import subscription_lock

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
RETRY_DAYS = (1, 3, 5, 7)


@pytest.fixture(autouse=True)
def tiers(db):
    services.tier_catalog_seed()


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def subscriber(email: str = "ada@example.com", *, stripe_billed: bool = False) -> Subscription:
    """A paying customer since T0: on Pro billed by a Stripe subscription (its checkout webhook
    applied), or on Enterprise Pro (a tier without trial) billed by the offline provider."""
    user = services.account_register(email=email, password="correct horse battery")
    if not stripe_billed:
        return services.subscription_start(user=user, tier="enterprise_pro").subscription  # no trial days
    checkout_paid(
        user=user,
        metadata={"kind": "subscription", "tier": "pro", "billing_cycle": "monthly"},
        amount_cents=1900,
        session_id=f"cs_test_{user.pk}",
        customer=f"cus_{user.pk}",
        subscription=f"sub_{user.pk}",
        invoice=f"in_first_{user.pk}",
    )
    return Subscription.objects.get(checkout_session_id=f"cs_test_{user.pk}")


def renewal_fails(subscription: Subscription, *, stripe_invoice_id: str | None = None, stripe=None) -> BillingInvoice:
    """The next period's payment fails now (as the invoice.payment_failed webhook reports it); with
    `stripe` (the emulator), Stripe holds that open invoice."""
    if stripe is not None:
        stripe.invoice_open(
            stripe_invoice_id,
            customer=subscription.stripe_customer_id,
            amount=int(subscription.base_price_usd * 100),
            subscription=subscription.stripe_subscription_id,
        )
    with transaction.atomic():
        locked = subscription_lock(subscription.pk)
        start = locked.current_period_end
        return services.invoice_payment_failed(
            subscription=locked,
            amount_due=usd_to_cents(locked.base_price_usd),
            period_start=start,
            period_end_at=add_months(start, 1),
            reason="Your card was declined.",
            stripe_invoice_id=stripe_invoice_id,
        )


def renewal_paid(subscription: Subscription, invoice: BillingInvoice) -> None:
    """The failed invoice is paid after all (invoice.paid from Stripe)."""
    with transaction.atomic():
        services.invoice_paid(
            subscription=subscription_lock(subscription.pk),
            amount_paid=invoice.amount_due,
            currency=invoice.currency,
            period_start=invoice.period_start,
            period_end_at=invoice.period_end,
            renews=True,
            stripe_invoice_id=invoice.stripe_invoice_id,
        )


def results(invoice: BillingInvoice) -> list[str]:
    return list(invoice.dunning_attempts.order_by("attempt_number").values_list("result", flat=True))


def pay_requests(stripe_http, invoice_id: str) -> int:
    return len(stripe_http.calls("POST", f"invoices/{invoice_id}/pay"))


def status_of(subscription: Subscription) -> str:
    subscription.refresh_from_db()
    return subscription.status


def test_a_failed_payment_schedules_retries_on_days_1_3_5_and_7(clock):
    subscription = subscriber()
    failed_at = add_months(T0, 1) + timedelta(hours=2)
    clock.move_to(failed_at)

    invoice = renewal_fails(subscription)

    assert status_of(subscription) == "past_due"
    assert invoice.status == "open"
    assert [
        (a.attempt_number, a.scheduled_at, a.result) for a in invoice.dunning_attempts.order_by("attempt_number")
    ] == [(number, failed_at + days * DAY, "scheduled") for number, days in enumerate(RETRY_DAYS, start=1)]
    failed = PaymentTransaction.objects.get(invoice=invoice)
    assert (failed.status, failed.failure_reason) == ("failed", "Your card was declined.")
    assert DunningAttempt.objects.count() == 4


def test_a_repeated_failure_report_for_the_invoice_schedules_nothing_more(clock, stripe_http):
    subscription = subscriber(stripe_billed=True)
    clock.move_to(add_months(T0, 1))
    invoice = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)

    clock.move_to(add_months(T0, 1) + 2 * DAY)
    again = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)

    assert again.pk == invoice.pk
    assert [a.scheduled_at for a in invoice.dunning_attempts.order_by("attempt_number")] == [
        add_months(T0, 1) + days * DAY for days in RETRY_DAYS
    ]
    assert status_of(subscription) == "past_due"


def test_retries_not_yet_due_are_not_run(clock, stripe_http):
    subscription = subscriber(stripe_billed=True)
    failed_at = add_months(T0, 1)
    clock.move_to(failed_at)
    invoice = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)
    stripe_http.pay_mode = "decline"

    clock.move_to(failed_at + DAY - timedelta(seconds=1))
    assert services.dunning_run() == {}
    clock.move_to(failed_at + 2 * DAY)
    assert services.dunning_run() == {"retry_failed": 1}

    assert results(invoice) == ["failed", "scheduled", "scheduled", "scheduled"]
    assert (
        list(invoice.dunning_attempts.filter(result="scheduled").values_list("attempted_at", flat=True)) == [None] * 3
    )
    assert pay_requests(stripe_http, "in_overdue") == 1


def test_a_stripe_decline_marks_the_attempt_failed_with_the_reason(clock, stripe_http):
    subscription = subscriber(stripe_billed=True)
    failed_at = add_months(T0, 1)
    clock.move_to(failed_at)
    invoice = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)
    stripe_http.pay_mode = "decline"

    clock.move_to(failed_at + DAY)
    services.dunning_run()

    attempt = invoice.dunning_attempts.get(attempt_number=1)
    assert (attempt.result, attempt.attempted_at) == ("failed", failed_at + DAY)
    assert attempt.failure_reason == "Your card was declined."
    assert pay_requests(stripe_http, "in_overdue") == 1
    invoice.refresh_from_db()
    assert invoice.status == "open"
    assert status_of(subscription) == "past_due"


def test_a_stripe_retry_that_is_paid_restores_the_subscription_once(clock, stripe_http):
    subscription = subscriber(stripe_billed=True)
    failed_at = add_months(T0, 1)
    clock.move_to(failed_at)
    invoice = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)

    clock.move_to(failed_at + DAY)
    assert services.dunning_run() == {"retry_succeeded": 1}
    renewal_paid(subscription, invoice)  # Stripe's invoice.paid for the same invoice follows

    assert pay_requests(stripe_http, "in_overdue") == 1
    assert status_of(subscription) == "active"
    assert (subscription.current_period_start, subscription.current_period_end) == (
        failed_at,
        add_months(failed_at, 1),
    )
    assert results(invoice) == ["succeeded", "cancelled", "cancelled", "cancelled"]
    assert CreditAllocation.objects.filter(subscription_id=subscription.pk, period_start=failed_at).count() == 1


def test_an_offline_retry_succeeds_and_renews_the_period(clock):
    subscription = subscriber()
    period_end = add_months(T0, 1)
    clock.move_to(period_end + timedelta(hours=1))
    invoice = renewal_fails(subscription)

    clock.move_to(period_end + timedelta(hours=1) + DAY)
    assert services.dunning_run() == {"retry_succeeded": 1}

    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid_usd) == ("paid", Decimal("149.00"))
    assert list(invoice.payments.order_by("created_at").values_list("status", flat=True)) == ["failed", "succeeded"]
    assert results(invoice) == ["succeeded", "cancelled", "cancelled", "cancelled"]
    assert status_of(subscription) == "active"
    assert (subscription.current_period_start, subscription.current_period_end) == (
        period_end,
        add_months(period_end, 1),
    )
    assert list(
        CreditAllocation.objects.filter(subscription_id=subscription.pk)
        .order_by("period_start")
        .values_list("period_start", flat=True)
    ) == [T0, period_end]


def test_a_paid_invoice_cancels_the_remaining_attempts(clock, stripe_http):
    subscription = subscriber(stripe_billed=True)
    failed_at = add_months(T0, 1)
    clock.move_to(failed_at)
    invoice = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)
    stripe_http.pay_mode = "decline"
    clock.move_to(failed_at + DAY)
    services.dunning_run()

    clock.move_to(failed_at + 2 * DAY)
    renewal_paid(subscription, invoice)

    assert results(invoice) == ["failed", "cancelled", "cancelled", "cancelled"]
    assert status_of(subscription) == "active"
    clock.move_to(failed_at + 8 * DAY)
    assert services.dunning_run() == {}
    assert pay_requests(stripe_http, "in_overdue") == 1


def test_exhausted_retries_start_a_seven_day_grace_period(clock, stripe_http):
    subscription = subscriber(stripe_billed=True)
    failed_at = add_months(T0, 1)
    clock.move_to(failed_at)
    invoice = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)
    stripe_http.pay_mode = "decline"

    for days in RETRY_DAYS[:-1]:
        clock.move_to(failed_at + days * DAY)
        services.dunning_run()
        assert status_of(subscription) == "past_due"
    clock.move_to(failed_at + 7 * DAY)
    assert services.dunning_run() == {"retry_failed": 1}

    assert results(invoice) == ["failed"] * 4
    assert pay_requests(stripe_http, "in_overdue") == 4
    assert status_of(subscription) == "grace_period"
    assert subscription.grace_period_ends_at == failed_at + 14 * DAY
    assert UserEntitlement.objects.get(user=subscription.user).tier == "pro"  # service continues in grace
    transition = AdminAuditLog.objects.filter(action="transition", resource_id=str(subscription.pk)).first()
    assert transition.new_value["status"] == "grace_period"
    assert transition.new_value["reason"] == "Payment retries exhausted"


def in_grace(clock, stripe_http) -> tuple[Subscription, BillingInvoice, datetime]:
    """A Stripe-billed subscription whose four retries were declined; returns when grace ends."""
    subscription = subscriber(stripe_billed=True)
    failed_at = add_months(T0, 1)
    clock.move_to(failed_at)
    invoice = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)
    stripe_http.pay_mode = "decline"
    for days in RETRY_DAYS:
        clock.move_to(failed_at + days * DAY)
        services.dunning_run()
    assert status_of(subscription) == "grace_period"
    return subscription, invoice, subscription.grace_period_ends_at


def test_the_end_of_the_grace_period_suspends_to_free_entitlements(clock, stripe_http):
    subscription, invoice, grace_ends_at = in_grace(clock, stripe_http)

    clock.move_to(grace_ends_at - timedelta(seconds=1))
    assert services.dunning_run() == {}
    assert status_of(subscription) == "grace_period"
    clock.move_to(grace_ends_at)
    assert services.dunning_run() == {"suspended": 1}

    assert status_of(subscription) == "suspended"
    assert subscription.grace_period_ends_at is None
    entitlement = UserEntitlement.objects.get(user=subscription.user)
    assert (entitlement.tier, entitlement.entitlements["api_access"]) == ("free", False)
    invoice.refresh_from_db()
    assert invoice.status == "open"


def test_a_payment_during_the_grace_period_makes_it_active_again(clock, stripe_http):
    subscription, invoice, grace_ends_at = in_grace(clock, stripe_http)

    clock.move_to(grace_ends_at - DAY)
    renewal_paid(subscription, invoice)

    assert status_of(subscription) == "active"
    assert subscription.grace_period_ends_at is None
    assert subscription.current_period_start == invoice.period_start
    assert UserEntitlement.objects.get(user=subscription.user).tier == "pro"
    clock.move_to(grace_ends_at + DAY)
    assert services.dunning_run() == {}
    assert status_of(subscription) == "active"


def test_a_payment_after_suspension_restores_the_tier(clock, stripe_http):
    subscription, invoice, grace_ends_at = in_grace(clock, stripe_http)
    clock.move_to(grace_ends_at)
    services.dunning_run()

    clock.move_to(grace_ends_at + DAY)
    renewal_paid(subscription, invoice)

    assert status_of(subscription) == "active"
    entitlement = UserEntitlement.objects.get(user=subscription.user)
    assert (entitlement.tier, entitlement.entitlements["api_access"]) == ("pro", True)
    assert (
        CreditAllocation.objects.filter(subscription_id=subscription.pk, period_start=invoice.period_start).count() == 1
    )


def test_running_dunning_twice_at_the_same_moment_does_nothing_more(clock, stripe_http):
    subscription = subscriber(stripe_billed=True)
    failed_at = add_months(T0, 1)
    clock.move_to(failed_at)
    invoice = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)
    stripe_http.pay_mode = "decline"
    for days in RETRY_DAYS:
        clock.move_to(failed_at + days * DAY)
        assert services.dunning_run() == {"retry_failed": 1}
        audit_rows, requests = AdminAuditLog.objects.count(), len(stripe_http.requests)
        assert services.dunning_run() == {}
        assert (AdminAuditLog.objects.count(), len(stripe_http.requests)) == (audit_rows, requests)
    assert status_of(subscription) == "grace_period"
    clock.move_to(subscription.grace_period_ends_at)
    assert services.dunning_run() == {"suspended": 1}
    audit_rows = AdminAuditLog.objects.count()
    assert services.dunning_run() == {}

    assert AdminAuditLog.objects.count() == audit_rows
    assert status_of(subscription) == "suspended"
    assert results(invoice) == ["failed"] * 4


def test_a_provider_outage_leaves_the_retry_scheduled_and_the_pass_goes_on(clock, stripe_http):
    subscription = subscriber(stripe_billed=True)
    failed_at = add_months(T0, 1)
    clock.move_to(failed_at)
    invoice = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)
    stripe_http.inject("POST", "invoices/in_overdue/pay", "unavailable")

    clock.move_to(failed_at + DAY)
    assert services.dunning_run() == {"retry_deferred": 1}

    assert results(invoice) == ["scheduled"] * 4
    assert invoice.dunning_attempts.get(attempt_number=1).attempted_at is None
    assert services.dunning_run() == {"retry_succeeded": 1}
    assert status_of(subscription) == "active"
    # the second pass resumed the same retry: one operation, both pay requests under its key
    operation = PaymentOperation.objects.get(kind="dunning_retry")
    keys = {
        request["headers"]["Idempotency-Key"] for request in stripe_http.requests if request["path"].endswith("/pay")
    }
    assert keys == {f"op_{operation.pk}:pay"}
    assert len(stripe_http.charges) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_dunning_runs_collect_each_retry_once(stripe_http):
    with time_machine.travel(T0, tick=False) as clock:
        subscription = subscriber(stripe_billed=True)
        failed_at = add_months(T0, 1)
        clock.move_to(failed_at)
        invoice = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)
        clock.move_to(failed_at + DAY)

        outcomes = run_concurrently(lambda _: services.dunning_run(), [1, 2, 3, 4])

    # each run reports the attempt's outcome, but only the one holding the lock first asked Stripe
    assert not [outcome for outcome in outcomes if isinstance(outcome, Exception)], outcomes
    assert pay_requests(stripe_http, "in_overdue") == 1
    assert results(invoice) == ["succeeded", "cancelled", "cancelled", "cancelled"]
    assert status_of(subscription) == "active"
    assert CreditAllocation.objects.filter(subscription_id=subscription.pk, period_start=failed_at).count() == 1
    assert list(invoice.payments.order_by("created_at").values_list("status", flat=True)) == ["failed", "succeeded"]
    assert AdminAuditLog.objects.filter(action="transition", resource_id=str(subscription.pk)).count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_retry_racing_the_invoice_paid_webhook_neither_deadlocks_nor_charges_twice(stripe_http, monkeypatch):
    """The worst interleaving, forced: the dunning retry has begun taking its locks when the
    webhook for the same invoice takes the subscription's. Both must finish (no deadlock between
    them), and the invoice is collected once."""
    with time_machine.travel(T0, tick=False) as clock:
        subscription = subscriber(stripe_billed=True)
        failed_at = add_months(T0, 1)
        clock.move_to(failed_at)
        invoice = renewal_fails(subscription, stripe_invoice_id="in_overdue", stripe=stripe_http)
        clock.move_to(failed_at + DAY)

        retry_locking, webhook_locked = threading.Event(), threading.Event()
        lock_for_retry, lock_for_webhook = billing.subscription_lock, webhooks.subscription_locked_reading

        def retry_takes_the_subscription(subscription_id):
            retry_locking.set()
            webhook_locked.wait(timeout=10)
            return lock_for_retry(subscription_id)

        def webhook_takes_the_subscription(stripe_subscription_id, reads):
            retry_locking.wait(timeout=10)
            locked = lock_for_webhook(stripe_subscription_id, reads)
            webhook_locked.set()
            return locked

        monkeypatch.setattr(billing, "subscription_lock", retry_takes_the_subscription)
        monkeypatch.setattr(webhooks, "subscription_locked_reading", webhook_takes_the_subscription)
        paid = {**stripe_invoice_paid(invoice), "subscription": subscription.stripe_subscription_id}
        payload = event_payload("invoice.paid", paid, event_id="evt_overdue_paid")

        def webhook():
            return APIClient().post(
                "/api/v1/billing/webhooks/stripe/",
                data=payload,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=signature_header(payload),
            )

        retry, delivered = run_concurrently(lambda call: call(), [services.dunning_run, webhook])

    assert not isinstance(retry, Exception), retry
    assert delivered.status_code == 200, delivered.content
    assert retry == {"retry_cancelled": 1}  # the payment was in before the retry got its turn
    assert pay_requests(stripe_http, "in_overdue") == 0
    assert results(invoice) == ["cancelled"] * 4
    assert status_of(subscription) == "active"
    assert CreditAllocation.objects.filter(subscription_id=subscription.pk, period_start=failed_at).count() == 1


def stripe_invoice_paid(invoice: BillingInvoice) -> dict:
    return {
        "id": invoice.stripe_invoice_id,
        "object": "invoice",
        "billing_reason": "subscription_cycle",
        "status": "paid",
        "amount_paid": 1900,
        "currency": "usd",
        "lines": {
            "object": "list",
            "data": [
                {"period": {"start": int(invoice.period_start.timestamp()), "end": int(invoice.period_end.timestamp())}}
            ],
        },
    }
