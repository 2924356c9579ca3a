"""Money in its own currency: checkouts and invoices in euros, yen (no minor unit) and dinars (three
decimals) are recorded exactly, with their currency, through the signed webhook endpoint."""

from decimal import Decimal

import pytest

from licensing.models import PerpetualLicense
from payments.models import Payment, PaymentEvent
from payments.tests.conftest import client_for
from payments.tests.webhook_flows import license_bought, post_event, refunded, subscribed
from subscriptions.models import BillingInvoice, PaymentTransaction

pytestmark = [pytest.mark.django_db]

AMOUNTS = [
    # currency, minor units Stripe sends, the exact amount, as the API shows it
    ("eur", 1900, Decimal("19.00"), "19.00"),
    ("jpy", 2900, Decimal("2900"), "2900.00"),
    ("kwd", 19005, Decimal("19.005"), "19.005"),
]


@pytest.mark.parametrize(("currency", "minor", "exact", "shown"), AMOUNTS)
def test_a_subscription_paid_in_another_currency_is_recorded_exactly(
    stripe_http, catalog, api_client, currency, minor, exact, shown
):
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com", amount=minor, currency=currency)

    invoice = BillingInvoice.objects.get(subscription=subscription)
    transaction_row = PaymentTransaction.objects.get(invoice=invoice)
    assert (invoice.amount_due, invoice.amount_paid, invoice.currency) == (minor, minor, currency)
    assert (transaction_row.amount, transaction_row.currency) == (minor, currency)
    assert (payment.amount, payment.currency, payment.amount_major) == (minor, currency, exact)
    listed = client_for(subscription.user).get("/api/v1/me/invoices/").json()["results"]
    assert [
        (row["amount_due_minor"], row["amount_paid_in_currency"], row["amount_due_in_currency"], row["currency"])
        for row in listed
    ] == [(minor, shown, shown, currency)]
    checkout_event = PaymentEvent.objects.get(event_type="checkout_completed", user=subscription.user)
    assert (checkout_event.amount, checkout_event.currency) == (minor, currency)


@pytest.mark.parametrize(("currency", "minor", "exact", "shown"), AMOUNTS)
def test_a_license_paid_in_another_currency_is_recorded_exactly_and_refunded_in_it(
    stripe_http, catalog, api_client, currency, minor, exact, shown
):
    license_, payment = license_bought(stripe_http, api_client, "buyer@example.com", amount=minor, currency=currency)

    assert (payment.amount, payment.currency, payment.amount_major) == (minor, currency, exact)
    license_ = PerpetualLicense.objects.get(pk=license_.pk)
    assert license_.purchase_currency == currency
    checkout_event = PaymentEvent.objects.get(event_type="checkout_completed", user=license_.user)
    assert (checkout_event.amount, checkout_event.currency) == (minor, currency)

    result = post_event(api_client, "charge.refunded", refunded(payment, minor))

    assert (result["result"]["amount_refunded"], result["result"]["currency"]) == (minor, currency)
    assert Payment.objects.get(pk=payment.pk).amount_refunded_major == exact
    refund_event = PaymentEvent.objects.get(event_type="refund", user=license_.user)
    assert (refund_event.amount, refund_event.currency) == (minor, currency)
