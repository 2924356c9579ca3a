"""Stripe webhooks: verify, store, process, in that order.

The `WebhookEvent` row is the record of record. It is written in the transaction that applies the
event's effects, and its unique (provider, event_id) settles concurrent deliveries: the second insert
waits for the first transaction and then finds its row. A processed event answers every later
delivery with its first result. A handler that fails has its effects rolled back (savepoint) while
the row keeps the error, and the request answers 500 so that Stripe delivers it again.
"""

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import stripe
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, payment_event_record, resource_type_of, to_json
from billing_project.errors import DomainError, NotFound
from billing_project.metrics import IDEMPOTENT_HITS, WEBHOOK_INVALID_SIGNATURES, WEBHOOK_REPLAY_BLOCKS
from billing_project.payments import checkout_completed
from subscriptions.models import Subscription, SubscriptionStatus, WebhookEvent, WebhookProvider, WebhookStatus
from subscriptions.services import billing
from subscriptions.services.lifecycle import subscription_transition, transition_allowed

logger = logging.getLogger(__name__)

Status = SubscriptionStatus
DONE = (WebhookStatus.PROCESSED, WebhookStatus.IGNORED)
# Stripe's subscription statuses, as ours. Stripe's "trialing" and "incomplete" have no counterpart
# to move to: our trials are our own, and an incomplete subscription was never activated here.
STRIPE_STATUSES = {
    "active": Status.ACTIVE,
    "past_due": Status.PAST_DUE,
    "unpaid": Status.SUSPENDED,
    "canceled": Status.CANCELLED,
    "incomplete_expired": Status.EXPIRED,
}


class InvalidSignature(DomainError):
    code = "invalid_signature"
    title = "Invalid webhook signature"


class WebhookProcessingFailed(DomainError):
    """Answered 500 so that Stripe delivers the event again; the row keeps the error."""

    status = 500
    code = "webhook_processing_failed"
    title = "Webhook processing failed"


class ProviderStateMissing(Exception):
    """The event refers to something not recorded yet (its checkout has not arrived); Stripe's
    retry will find it."""


def webhook_receive(*, payload: bytes, signature_header: str) -> tuple[WebhookEvent, bool]:
    """Verifies the signature on the raw body (tolerance 300 s), then stores and processes the event.
    Returns the row and whether this delivery was a replay of a finished event."""
    try:
        if not settings.STRIPE_WEBHOOK_SECRET:
            raise stripe.SignatureVerificationError("No webhook secret is configured.", signature_header)
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"),
            signature_header,
            settings.STRIPE_WEBHOOK_SECRET,
            tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS,
        )
        event = json.loads(payload)
        event_id, event_type = event["id"], event["type"]
    except (stripe.SignatureVerificationError, ValueError, KeyError, TypeError) as error:
        WEBHOOK_INVALID_SIGNATURES.inc()
        raise InvalidSignature(f"The Stripe-Signature header does not verify this body: {error}") from error
    return webhook_event_accept(event_id=event_id, event_type=event_type, event=event)


@transaction.atomic
def webhook_event_accept(*, event_id: str, event_type: str, event: dict) -> tuple[WebhookEvent, bool]:
    row, created = WebhookEvent.objects.get_or_create(
        provider=WebhookProvider.STRIPE,
        event_id=event_id,
        defaults={"event_type": event_type, "payload": event, "event_created_at": _timestamp(event.get("created"))},
    )
    if not created:
        row = WebhookEvent.objects.select_for_update().get(pk=row.pk)
        if row.status in DONE:
            WEBHOOK_REPLAY_BLOCKS.inc()
            IDEMPOTENT_HITS.labels(operation="webhook").inc()
            return row, True
    _process(row)
    return row, False


@transaction.atomic
def webhook_replay(*, event_id: str, actor=None) -> WebhookEvent:
    """Processes a stored event again (manage.py replay_webhook, console action); audited. The
    handlers are idempotent, so replaying a processed event changes nothing."""
    row = WebhookEvent.objects.select_for_update().filter(event_id=event_id).first()
    if row is None:
        raise NotFound(f"No stored webhook event {event_id}.", code="webhook_event_not_found")
    previous = {"status": row.status, "result": row.result, "error": row.error}
    _process(row)
    audit_record(
        action=AuditAction.PROCESS,
        resource_type=resource_type_of(row),
        resource_id=row.event_id,
        previous_value=previous,
        new_value={"status": row.status, "result": row.result, "error": row.error, "replay": True},
        actor=actor,
    )
    return row


def _process(row: WebhookEvent) -> None:
    row.attempts += 1
    handler = HANDLERS.get(row.event_type)
    try:
        with transaction.atomic():
            result = handler(row) if handler else None
    except Exception as error:  # the row keeps what went wrong; its effects rolled back with the savepoint
        logger.exception("webhook %s (%s) failed", row.event_id, row.event_type)
        row.status, row.error, row.result = WebhookStatus.FAILED, f"{type(error).__name__}: {error}"[:5000], None
        row.save(update_fields=["status", "error", "result", "attempts", "updated_at"])
        return
    row.status = WebhookStatus.IGNORED if result is None else WebhookStatus.PROCESSED
    row.result = to_json(result)
    row.error = ""
    row.processed_at = timezone.now()
    row.save(update_fields=["status", "result", "error", "processed_at", "attempts", "updated_at"])


def _timestamp(seconds) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None


def _usd(cents) -> Decimal:
    return (Decimal(cents or 0) / 100).quantize(Decimal("0.01"))


def _record(row: WebhookEvent, *, event_type: str, user=None, amount=None, currency="", **ids) -> None:
    """The PaymentEvent and the audit row every handled event writes."""
    payment_event_record(
        event_type=event_type,
        user=user,
        amount=amount,
        currency=currency,
        metadata={"stripe_event_id": row.event_id, "stripe_event_type": row.event_type},
        webhook_event=row,
        **ids,
    )
    audit_record(
        action=AuditAction.PROCESS,
        resource_type=resource_type_of(row),
        resource_id=row.event_id,
        new_value={"event_type": row.event_type, "payment_event": event_type, "amount": amount, **ids},
    )


def _subscription_locked(stripe_subscription_id: str | None) -> Subscription | None:
    if not stripe_subscription_id:
        return None
    return Subscription.objects.select_for_update().filter(stripe_subscription_id=stripe_subscription_id).first()


def _object(row: WebhookEvent) -> dict:
    return row.payload["data"]["object"]


# Handlers: each returns the result to store, or None for an event that is acknowledged only.


def _checkout_session_completed(row: WebhookEvent) -> dict | None:
    session = _object(row)
    metadata = session.get("metadata") or {}
    kind = metadata.get("kind")
    if not kind or session.get("payment_status") not in ("paid", "no_payment_required"):
        return None  # not one of our checkouts, or paid later (checkout.session.async_payment_succeeded)
    user_id = session.get("client_reference_id")
    provider_ids = {
        "stripe_customer_id": session.get("customer") or "",
        "stripe_subscription_id": session.get("subscription") or "",
        "stripe_invoice_id": session.get("invoice") or "",
        "stripe_payment_intent_id": session.get("payment_intent") or "",
    }
    completed = checkout_completed(
        kind=kind,
        user_id=user_id,
        metadata={**metadata, **provider_ids},
        session_id=session["id"],
        amount_usd=_usd(session.get("amount_total")),
    )
    user = getattr(completed, "user", None)
    _record(
        row,
        event_type="checkout_completed",
        user=user,
        amount=session.get("amount_total"),
        currency=session.get("currency") or "",
        plan_code=metadata.get("tier", kind),
        customer_id=provider_ids["stripe_customer_id"],
        subscription_id=provider_ids["stripe_subscription_id"],
        invoice_id=provider_ids["stripe_invoice_id"],
    )
    return {"action": "checkout_completed", "kind": kind, "object_id": str(completed.pk)}


def _invoice_subscription_id(invoice: dict) -> str | None:
    """Where the invoice names its subscription: `subscription` before Stripe's 2025 API versions,
    `parent.subscription_details.subscription` since."""
    if invoice.get("subscription"):
        return invoice["subscription"]
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return details.get("subscription")


def _invoice_period(invoice: dict) -> tuple[datetime, datetime]:
    lines = (invoice.get("lines") or {}).get("data") or []
    period = lines[0].get("period") if lines else None
    if period:
        return _timestamp(period["start"]), _timestamp(period["end"])
    return _timestamp(invoice["period_start"]), _timestamp(invoice["period_end"])


def _invoice_subscription(row: WebhookEvent) -> tuple[dict, Subscription | None]:
    invoice = _object(row)
    stripe_subscription_id = _invoice_subscription_id(invoice)
    subscription = _subscription_locked(stripe_subscription_id)
    if stripe_subscription_id and subscription is None:
        raise ProviderStateMissing(f"No subscription {stripe_subscription_id} yet for invoice {invoice['id']}.")
    return invoice, subscription


def _record_invoice_event(row: WebhookEvent, *, event_type: str, subscription: Subscription, amount) -> None:
    invoice = _object(row)
    _record(
        row,
        event_type=event_type,
        user=subscription.user,
        amount=amount,
        currency=invoice.get("currency") or "",
        plan_code=subscription.tier,
        customer_id=invoice.get("customer") or "",
        subscription_id=subscription.stripe_subscription_id,
        invoice_id=invoice["id"],
    )


def _invoice_paid(row: WebhookEvent) -> dict | None:
    invoice, subscription = _invoice_subscription(row)
    if subscription is None:
        return None  # a one-off invoice; checkouts complete through checkout.session.completed
    period_start, period_end_at = _invoice_period(invoice)
    paid = billing.invoice_paid(
        subscription=subscription,
        amount_paid_usd=_usd(invoice.get("amount_paid")),
        period_start=period_start,
        period_end_at=period_end_at,
        renews=invoice.get("billing_reason") == "subscription_cycle",
        stripe_invoice_id=invoice["id"],
        stripe_payment_intent_id=invoice.get("payment_intent") or None,
    )
    _record_invoice_event(row, event_type="invoice_paid", subscription=subscription, amount=invoice.get("amount_paid"))
    return {
        "action": "invoice_paid",
        "invoice_id": str(paid.pk),
        "subscription_id": str(subscription.pk),
        "subscription_status": subscription.status,
        "current_period_end": subscription.current_period_end,
    }


def _invoice_payment_failed(row: WebhookEvent) -> dict | None:
    invoice, subscription = _invoice_subscription(row)
    if subscription is None:
        return None
    period_start, period_end_at = _invoice_period(invoice)
    attempt = invoice.get("attempt_count")
    failed = billing.invoice_payment_failed(
        subscription=subscription,
        amount_due_usd=_usd(invoice.get("amount_due")),
        period_start=period_start,
        period_end_at=period_end_at,
        reason=f"Stripe could not collect the invoice (attempt {attempt})" if attempt else "Payment failed",
        stripe_invoice_id=invoice["id"],
        stripe_payment_intent_id=invoice.get("payment_intent") or None,
    )
    _record_invoice_event(
        row, event_type="invoice_payment_failed", subscription=subscription, amount=invoice.get("amount_due")
    )
    return {
        "action": "invoice_payment_failed",
        "invoice_id": str(failed.pk),
        "subscription_id": str(subscription.pk),
        "subscription_status": subscription.status,
    }


def _newer_than_applied(subscription: Subscription, row: WebhookEvent) -> bool:
    """Events can arrive in any order: one created before the newest applied is stale."""
    created = row.event_created_at
    return created is None or subscription.provider_updated_at is None or created >= subscription.provider_updated_at


def _mark_applied(subscription: Subscription, row: WebhookEvent) -> None:
    if _newer_than_applied(subscription, row) and row.event_created_at is not None:
        subscription.provider_updated_at = row.event_created_at


def _subscription_updated(row: WebhookEvent) -> dict | None:
    stripe_subscription = _object(row)
    subscription = _subscription_locked(stripe_subscription["id"])
    if subscription is None:
        return None
    if not _newer_than_applied(subscription, row):
        return {"action": "stale_event_skipped", "subscription_id": str(subscription.pk)}
    target = STRIPE_STATUSES.get(stripe_subscription.get("status"))
    if target and target != subscription.status and transition_allowed(subscription.status, target):
        subscription_transition(
            subscription=subscription, status=target, reason=f"Stripe reports {stripe_subscription['status']}"
        )
    subscription.cancel_at_period_end = bool(stripe_subscription.get("cancel_at_period_end"))
    _mark_applied(subscription, row)
    subscription.save(update_fields=["cancel_at_period_end", "provider_updated_at", "updated_at"])
    _record(
        row,
        event_type="subscription_updated",
        user=subscription.user,
        plan_code=subscription.tier,
        customer_id=stripe_subscription.get("customer") or "",
        subscription_id=subscription.stripe_subscription_id,
    )
    return {
        "action": "subscription_updated",
        "subscription_id": str(subscription.pk),
        "subscription_status": subscription.status,
        "cancel_at_period_end": subscription.cancel_at_period_end,
    }


def _subscription_deleted(row: WebhookEvent) -> dict | None:
    stripe_subscription = _object(row)
    subscription = _subscription_locked(stripe_subscription["id"])
    if subscription is None:
        return None
    if transition_allowed(subscription.status, Status.CANCELLED):
        subscription_transition(subscription=subscription, status=Status.CANCELLED, reason="Stripe ended it")
    _mark_applied(subscription, row)
    subscription.save(update_fields=["provider_updated_at", "updated_at"])
    _record(
        row,
        event_type="subscription_deleted",
        user=subscription.user,
        plan_code=subscription.tier,
        customer_id=stripe_subscription.get("customer") or "",
        subscription_id=subscription.stripe_subscription_id,
    )
    return {"action": "subscription_cancelled", "subscription_id": str(subscription.pk)}


def _charge_refunded(row: WebhookEvent) -> dict | None:
    charge = _object(row)
    payment_intent = charge.get("payment_intent")
    refunded_usd = _usd(charge.get("amount_refunded"))
    payment = payment_intent and billing.payment_refunded(
        stripe_payment_intent_id=payment_intent, refunded_usd=refunded_usd, charge_id=charge["id"]
    )
    if not payment:
        return None
    _record(
        row,
        event_type="charge_refunded",
        user=payment.user,
        amount=charge.get("amount_refunded"),
        currency=charge.get("currency") or "",
        customer_id=charge.get("customer") or "",
        invoice_id=charge.get("invoice") or "",
    )
    return {"action": "refund_recorded", "payment_intent": payment_intent, "amount_refunded": charge["amount_refunded"]}


HANDLERS: dict[str, Callable[[WebhookEvent], dict | None]] = {
    "checkout.session.completed": _checkout_session_completed,
    "invoice.paid": _invoice_paid,
    "invoice.payment_succeeded": _invoice_paid,
    "invoice.payment_failed": _invoice_payment_failed,
    "customer.subscription.updated": _subscription_updated,
    "customer.subscription.deleted": _subscription_deleted,
    "charge.refunded": _charge_refunded,
}
