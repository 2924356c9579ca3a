"""An upgrade's charge against a Stripe that fails at every outbound step (PostgreSQL, real commits).

`POST subscriptions/{id}/change-tier/` charges the prorated difference through one operation: an
invoice of its own, its item, then pay, each request under the operation's idempotency key. For each
step, Stripe is made to fail before doing anything, to do it and lose the answer, or to do it after
the client gave up waiting; and the database is made to fail after Stripe's last answer and before
our commit. Whatever happens, the client retries (with its Idempotency-Key, or without one): Stripe
charges at most once, and the upgrade is applied exactly once.
"""

import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from credits.models import CreditAllocation, CreditSource
from payments.models import OperationKind, OperationState, PaymentEvent, PaymentOperation
from payments.services.reconcile import payments_reconcile
from payments.tests.conftest import client_for, ledger_is_consistent, stripe_subscriber
from payments.tests.helpers import deliver_event
from subscriptions.models import BillingInvoice, ProrationEvent, Subscription

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("catalog")]

STEPS = {"invoice": ("POST", "invoices"), "item": ("POST", "invoiceitems"), "pay": ("POST", r"invoices/[^/]+/pay")}


def change_tier(subscription: Subscription, *, key: str | None = None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client_for(subscription.user).post(
        f"/api/v1/subscriptions/{subscription.pk}/change-tier/", {"tier": "enterprise_max"}, format="json", **headers
    )


def upgrade_applied_once(subscription: Subscription, stripe) -> None:
    subscription.refresh_from_db()
    assert subscription.tier == "enterprise_max"
    (event,) = ProrationEvent.objects.filter(subscription=subscription)
    assert event.status == "applied"
    (operation,) = PaymentOperation.objects.filter(kind=OperationKind.UPGRADE_CHARGE)
    assert (operation.state, operation.effect) == (OperationState.SUCCEEDED, "succeeded")
    assert len(stripe.charges) == 1
    assert stripe.charges[0] == {"invoice": operation.stripe_invoice_id, "amount": int(event.net_charge_usd * 100)}
    owned = [
        invoice
        for invoice in stripe.objects_of("invoice")
        if invoice["metadata"].get("operation_id") == str(operation.pk)
    ]
    assert [invoice["id"] for invoice in owned] == [operation.stripe_invoice_id], "one invoice of its own"
    assert len(owned[0]["lines"]["data"]) == 1, "one item on it"
    assert all(item["invoice"] for item in stripe.objects_of("invoiceitem")), "no item left for the next invoice"
    paid = BillingInvoice.objects.get(stripe_invoice_id=operation.stripe_invoice_id)
    assert (paid.status, paid.amount_paid_usd) == ("paid", event.net_charge_usd)
    assert CreditAllocation.objects.filter(subscription_id=subscription.pk, source=CreditSource.PRORATION).count() == 1
    assert PaymentEvent.objects.filter(event_type="charge_succeeded").count() == 1
    assert ledger_is_consistent()


@pytest.mark.parametrize("retry_with_key", [True, False], ids=["same_key", "no_key"])
@pytest.mark.parametrize("fault", ["unavailable", "drop", "hang"])
@pytest.mark.parametrize("step", list(STEPS))
def test_a_failure_at_any_step_is_a_503_and_the_retry_charges_once(stripe, settings, step, fault, retry_with_key):
    # given: an Enterprise Pro customer billed by Stripe, and Stripe failing once at one step of the charge
    subscription = stripe_subscriber(stripe)
    settings.STRIPE_READ_TIMEOUT_SECONDS = 0.5
    method, path = STEPS[step]
    stripe.inject(method, path, fault, seconds=1.0)
    key = "upgrade-1" if retry_with_key else None

    # when: the customer upgrades
    first = change_tier(subscription, key=key)

    # then: 503 to retry, nothing applied, the operation kept with what Stripe made so far
    assert first.status_code == 503, first.content
    assert first["Retry-After"] == "30"
    assert first.json()["code"] == "payment_provider_unavailable"
    subscription.refresh_from_db()
    assert subscription.tier == "enterprise_pro"
    operation = PaymentOperation.objects.get(kind=OperationKind.UPGRADE_CHARGE)
    assert operation.state in (OperationState.PENDING, OperationState.SUBMITTED)
    assert operation.effect == ""
    if fault == "hang":
        time.sleep(1.2)  # the hung request is done at Stripe by now

    # when: the client retries the same request
    again = change_tier(subscription, key=key)

    # then: the same operation resumed, under the same idempotency keys: one charge, applied once
    assert again.status_code == 200, again.content
    assert again.json()["payment"]["id"] == str(operation.pk)
    assert again.json()["proration"]["status"] == "applied"
    keys = {request["headers"]["Idempotency-Key"] for request in stripe.requests if request["path"].endswith("/pay")}
    assert keys == {f"op_{operation.pk}:pay"}
    upgrade_applied_once(subscription, stripe)


def test_a_failure_after_stripe_charged_and_before_our_commit_is_applied_once_on_retry(stripe, fail_inserts_into):
    subscription = stripe_subscriber(stripe)
    lift = fail_inserts_into("payments_paymentevent")

    first = change_tier(subscription, key="upgrade-1")

    # Stripe charged, but our commit of the effect failed: nothing applied, the key freed
    assert first.status_code == 500, first.content
    assert len(stripe.charges) == 1
    subscription.refresh_from_db()
    assert subscription.tier == "enterprise_pro"
    assert PaymentOperation.objects.get(kind=OperationKind.UPGRADE_CHARGE).state == OperationState.SUBMITTED

    lift()
    again = change_tier(subscription, key="upgrade-1")

    assert again.status_code == 200, again.content
    upgrade_applied_once(subscription, stripe)


def test_a_charge_whose_answer_was_lost_is_applied_by_its_invoice_paid_event(stripe):
    subscription = stripe_subscriber(stripe)
    stripe.inject("POST", r"invoices/[^/]+/pay", "drop")

    assert change_tier(subscription).status_code == 503
    operation = PaymentOperation.objects.get(kind=OperationKind.UPGRADE_CHARGE)

    # the client never retries; Stripe's event about the paid invoice arrives (twice, as both types)
    invoice = stripe.object(operation.stripe_invoice_id)
    deliver_event("invoice.paid", invoice)
    deliver_event("invoice.payment_succeeded", invoice)

    upgrade_applied_once(subscription, stripe)


def test_a_charge_whose_answer_was_lost_is_applied_by_reconcile_when_nothing_else_comes(stripe):
    subscription = stripe_subscriber(stripe)
    stripe.inject("POST", r"invoices/[^/]+/pay", "drop")
    assert change_tier(subscription).status_code == 503

    with time_machine.travel(timezone.now() + timedelta(minutes=20)):
        assert payments_reconcile() == {"succeeded": 1}
        assert payments_reconcile() == {}

    upgrade_applied_once(subscription, stripe)


def test_an_operation_stopped_before_pay_is_voided_and_failed_by_reconcile(stripe):
    subscription = stripe_subscriber(stripe)
    stripe.inject("POST", "invoiceitems", "unavailable")
    assert change_tier(subscription).status_code == 503
    operation = PaymentOperation.objects.get(kind=OperationKind.UPGRADE_CHARGE)

    with time_machine.travel(timezone.now() + timedelta(minutes=20)):
        assert payments_reconcile() == {"failed": 1}

    operation.refresh_from_db()
    assert (operation.state, operation.effect, operation.cleanup_due) == ("failed", "failed", "")
    # the invoice never reached pay: it was a draft, now deleted, so it can never be paid
    assert operation.stripe_invoice_id not in {invoice["id"] for invoice in stripe.objects_of("invoice")}
    assert stripe.charges == []
    assert ProrationEvent.objects.get().status == "failed"
    subscription.refresh_from_db()
    assert subscription.tier == "enterprise_pro"
    # the customer may try again: a new operation, a new invoice
    assert change_tier(subscription).status_code == 200
    assert len(stripe.charges) == 1
