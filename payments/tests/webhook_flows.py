"""Purchases paid on the Stripe emulator and the events Stripe sends about their payments, posted
signed to the webhook endpoint, with the objects of the pinned API version."""

from licensing.models import PerpetualLicense
from payments.models import Payment
from payments.tests import stripe_objects
from payments.tests.conftest import client_for, customer
from payments.tests.stripe_emulator import event_payload, signature_header
from subscriptions.models import Subscription

WEBHOOK_URL = "/api/v1/billing/webhooks/stripe/"


def post_event(client, event_type: str, data_object: dict, *, created: int | None = None):
    payload = event_payload(event_type, data_object, event_id=stripe_objects.new_id("evt"), created=created)
    response = client.post(
        WEBHOOK_URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature_header(payload)
    )
    assert response.status_code == 200, response.content
    return response.json()


def license_bought(stripe, client, email: str, *, amount: int | None = None, currency: str | None = None):
    """A license paid through Stripe Checkout (payment mode: the session names its payment intent)."""
    user = customer(email)
    started = client_for(user).post("/api/v1/licenses/purchase/", {}, format="json")
    assert started.status_code == 201, started.content
    session_id = started.json()["checkout"]["session_id"]
    if currency:
        stripe.object(session_id).update(currency=currency, amount_total=amount, amount_subtotal=amount)
    session = stripe.checkout_complete(session_id)
    assert post_event(client, "checkout.session.completed", session)["status"] == "processed"
    return PerpetualLicense.objects.get(user=user), Payment.objects.get(stripe_checkout_session_id=session_id)


def subscribed(stripe, client, email: str, *, amount: int | None = None, currency: str | None = None):
    """Enterprise Pro paid through Stripe Checkout (subscription mode: the session names only its
    invoice), then the invoice.paid Stripe sends with its InvoicePayment."""
    user = customer(email)
    started = client_for(user).post("/api/v1/subscriptions/", {"tier": "enterprise_pro"}, format="json")
    assert started.status_code == 201, started.content
    session_id = started.json()["checkout"]["session_id"]
    if currency:
        stripe.object(session_id).update(currency=currency, amount_total=amount, amount_subtotal=amount)
    session = stripe.checkout_complete(session_id)
    assert session["payment_intent"] is None
    assert post_event(client, "checkout.session.completed", session)["status"] == "processed"
    assert post_event(client, "invoice.paid", stripe.object(session["invoice"]))["status"] == "processed"
    return Subscription.objects.get(user=user, tier="enterprise_pro"), Payment.objects.get(
        stripe_invoice_id=session["invoice"]
    )


def refunded(payment: Payment, *amounts: int, status="succeeded") -> dict:
    """The payment's charge with refunds of `amounts`."""
    refunds = [
        stripe_objects.refund(
            charge=charge_of(payment),
            payment_intent=payment.stripe_payment_intent_id,
            amount=amount,
            currency=payment.currency,
            status=status,
        )
        for amount in amounts
    ]
    return stripe_objects.charge(
        charge_id=charge_of(payment),
        payment_intent=payment.stripe_payment_intent_id,
        amount=payment.amount,
        currency=payment.currency,
        refunds=refunds,
    )


def charge_of(payment: Payment) -> str:
    return f"ch_{payment.stripe_payment_intent_id.removeprefix('pi_')}"


def disputed(payment: Payment, status: str, dispute_id: str = "dp_0001") -> dict:
    return stripe_objects.dispute(
        dispute_id=dispute_id,
        charge=charge_of(payment),
        payment_intent=payment.stripe_payment_intent_id,
        amount=payment.amount,
        currency=payment.currency,
        status=status,
    )
