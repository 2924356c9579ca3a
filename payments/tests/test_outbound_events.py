"""The events of money received (payment.succeeded, payment.refunded), written with the payment's own
record, through the signed webhook endpoint and the Stripe emulator."""

import pytest

from billing_project.models import OutboundEvent
from payments.tests import stripe_objects
from payments.tests.webhook_flows import license_bought, post_event, refunded, subscribed

pytestmark = [pytest.mark.django_db]


def events(event_type: str) -> list[OutboundEvent]:
    return list(OutboundEvent.objects.filter(type=event_type).order_by("created_at"))


def test_a_paid_license_checkout_emits_payment_succeeded_once_with_the_payment(stripe_http, catalog, api_client):
    license_, payment = license_bought(stripe_http, api_client, "buyer@example.com")

    (event,) = events("payment.succeeded")
    assert (event.subject, event.user) == (f"payment:{payment.pk}", license_.user)
    assert event.data == {
        "id": str(payment.pk),
        "user_id": str(license_.user_id),
        "kind": "license_checkout",
        "object_id": str(license_.pk),
        "provider": "stripe",
        "amount": "199.00",
        "amount_refunded": "0.00",
        "currency": "usd",
        "status": "succeeded",
        "paid_at": payment.paid_at.isoformat(),
    }


def test_a_subscription_paid_by_checkout_and_its_invoice_event_is_one_payment_succeeded(
    stripe_http, catalog, api_client
):
    # the checkout and Stripe's invoice.paid both record the same money
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com")

    assert [event.subject for event in events("payment.succeeded")] == [f"payment:{payment.pk}"]
    assert [event.subject for event in events("invoice.paid")] == [f"invoice:{subscription.invoices.get().pk}"]


def test_each_refund_emits_payment_refunded_once_and_a_repeated_report_none(stripe_http, catalog, api_client):
    _, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    charge = refunded(payment, 5000)

    post_event(api_client, "charge.refunded", charge)
    post_event(api_client, "refund.created", charge["refunds"]["data"][0])  # the same refund, told again
    rest = stripe_objects.refund(
        charge=charge["id"], payment_intent=payment.stripe_payment_intent_id, amount=14900, currency="usd"
    )
    post_event(api_client, "refund.updated", rest)

    first, second = events("payment.refunded")
    assert {first.subject, second.subject} == {f"payment:{payment.pk}"}
    assert (first.data["status"], first.data["amount_refunded"], first.data["refunded_now"]) == (
        "partially_refunded",
        "50.00",
        "50.00",
    )
    assert (second.data["status"], second.data["amount_refunded"], second.data["refunded_now"]) == (
        "refunded",
        "199.00",
        "149.00",
    )


def test_a_refund_of_an_unknown_charge_emits_nothing(stripe_http, catalog, api_client):
    license_bought(stripe_http, api_client, "buyer@example.com")
    before = OutboundEvent.objects.count()
    unknown = stripe_objects.charge(charge_id="ch_unknown", payment_intent="pi_unknown", amount=100, currency="usd")

    post_event(api_client, "charge.refunded", unknown)

    assert OutboundEvent.objects.count() == before
