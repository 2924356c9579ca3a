"""Test helpers that drive payments through their public doors, as Stripe would."""

import uuid

from django.test import override_settings

from payments.models import WebhookEvent
from payments.services.inbox import webhook_receive
from payments.tests.stripe_emulator import WEBHOOK_SECRET, event_payload, signature_header


def deliver_event(event_type: str, data_object: dict, *, event_id: str | None = None, created: int | None = None):
    """Delivers a signed Stripe event to the inbox (the webhook endpoint's service). Returns the row
    and whether it was a replay."""
    payload = event_payload(event_type, data_object, event_id=event_id or f"evt_{uuid.uuid4().hex}", created=created)
    with override_settings(STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET):
        return webhook_receive(payload=payload.encode(), signature_header=signature_header(payload))


def checkout_paid(
    *,
    user,
    metadata: dict,
    amount_cents: int,
    session_id: str | None = None,
    customer: str = "",
    subscription: str = "",
    invoice: str = "",
    payment_intent: str = "",
) -> WebhookEvent:
    """A Stripe checkout the customer paid, delivered as its checkout.session.completed event.
    `metadata` carries the kind (subscription, license...) and what the kind needs."""
    session = {
        "id": session_id or f"cs_test_{uuid.uuid4().hex[:16]}",
        "object": "checkout.session",
        "mode": "subscription" if subscription else "payment",
        "client_reference_id": str(user.pk),
        "customer": customer or None,
        "subscription": subscription or None,
        "invoice": invoice or None,
        "payment_intent": payment_intent or None,
        "metadata": metadata,
        "amount_subtotal": amount_cents,
        "amount_total": amount_cents,
        "currency": "usd",
        "payment_status": "paid",
        "status": "complete",
    }
    row, _ = deliver_event("checkout.session.completed", session)
    return row
