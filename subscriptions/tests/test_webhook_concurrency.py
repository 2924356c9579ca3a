"""Stripe delivers an event more than once, sometimes at the same moment, and sends invoice.paid and
invoice.payment_succeeded for one invoice together: real threads against real PostgreSQL."""

import pytest
from rest_framework.test import APIClient

from conftest import run_concurrently
from credits.models import CreditAllocation, UserCreditBalance
from payments.models import PaymentEvent, WebhookEvent, WebhookStatus
from subscriptions.models import BillingInvoice, PaymentTransaction, Subscription
from subscriptions.tests.conftest import (
    MONTH,
    StripeIds,
    customer_register,
    deliver,
    stripe_event,
    subscribe_through_checkout,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("stripe_http", "tier_catalog"),
]


def _stripe_subscriber() -> tuple[Subscription, StripeIds]:
    """A user who paid a Stripe checkout for Pro: in the first period, its credits allocated."""
    ids = StripeIds.new()
    return subscribe_through_checkout(APIClient(), customer_register("racer@example.com"), ids), ids


def _renewal(subscription: Subscription, ids: StripeIds, event_type="invoice.paid") -> dict:
    start = subscription.current_period_end
    return stripe_event(
        "invoice.paid", ids, event_type=event_type, period=(start, start + MONTH), billing_reason="subscription_cycle"
    )


def _assert_renewed_once(subscription: Subscription, renewal: StripeIds, event: dict) -> None:
    subscription.refresh_from_db()
    line_period = event["data"]["object"]["lines"]["data"][0]["period"]
    assert int(subscription.current_period_start.timestamp()) == line_period["start"]
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert invoice.status == "paid"
    assert PaymentTransaction.objects.filter(invoice=invoice).count() == 1
    assert PaymentTransaction.objects.count() == 2  # the checkout's and the renewal's
    # one payment, one payment event, whichever of Stripe's events came first
    assert PaymentEvent.objects.filter(event_type="invoice_paid", invoice_id=renewal.invoice).count() == 1
    allocations = CreditAllocation.objects.filter(subscription_id=subscription.pk).order_by("period_start")
    assert [(a.amount, a.period_start) for a in allocations][1:] == [(20_000, subscription.current_period_start)]


def test_ten_concurrent_deliveries_of_one_invoice_paid_apply_it_once():
    subscription, ids = _stripe_subscriber()
    renewal = ids.next_invoice()
    event = _renewal(subscription, renewal)
    balance = UserCreditBalance.objects.get(user=subscription.user).amount

    responses = run_concurrently(lambda _: deliver(APIClient(), event), list(range(10)))

    assert all(not isinstance(response, Exception) for response in responses), responses
    assert [response.status_code for response in responses] == [200] * 10
    bodies = [response.json() for response in responses]
    assert sorted(body["replayed"] for body in bodies) == [False] + [True] * 9
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert {body["result"]["invoice_id"] for body in bodies} == {str(invoice.pk)}
    row = WebhookEvent.objects.get(event_type="invoice.paid")
    assert (row.event_id, row.status, row.attempts) == (event["id"], WebhookStatus.PROCESSED, 1)
    _assert_renewed_once(subscription, renewal, event)
    assert PaymentEvent.objects.filter(event_type="invoice_paid").count() == 1
    assert UserCreditBalance.objects.get(user=subscription.user).amount == balance + 20_000


def test_invoice_paid_and_payment_succeeded_of_one_invoice_delivered_at_once_renew_once():
    # given: Stripe's two events for one payment, each delivered five times, all at the same moment
    subscription, ids = _stripe_subscriber()
    renewal = ids.next_invoice()
    events = [_renewal(subscription, renewal), _renewal(subscription, renewal, "invoice.payment_succeeded")]
    balance = UserCreditBalance.objects.get(user=subscription.user).amount

    responses = run_concurrently(lambda event: deliver(APIClient(), event), events * 5)

    assert [response.status_code for response in responses] == [200] * 10, responses
    statuses = WebhookEvent.objects.filter(event_type__startswith="invoice.").values_list("status", flat=True)
    assert list(statuses) == [WebhookStatus.PROCESSED] * 2
    assert sorted(response.json()["replayed"] for response in responses) == [False] * 2 + [True] * 8
    _assert_renewed_once(subscription, renewal, events[0])
    assert UserCreditBalance.objects.get(user=subscription.user).amount == balance + 20_000
