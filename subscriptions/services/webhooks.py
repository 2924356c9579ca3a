"""Subscriptions' Stripe event handlers, registered with the payments inbox (subscriptions.apps):
renewals and failed payments of Stripe-billed subscriptions, and Stripe-side subscription changes
(refunds and disputes: payments.services.refunds). Events that settle a payment operation (a checkout,
a one-off charge) are handled by payments before these are tried."""

import logging
from datetime import datetime

from payments.models import WebhookEvent
from payments.services.inbox import event_object, event_record, timestamp_of
from payments.services.refunds import invoice_payment_ids
from subscriptions.models import Subscription, SubscriptionStatus
from subscriptions.services import billing
from subscriptions.services.lifecycle import subscription_transition, transition_allowed

logger = logging.getLogger(__name__)

Status = SubscriptionStatus
# Stripe's subscription statuses, as ours. Stripe's "trialing" and "incomplete" have no counterpart
# to move to: our trials are our own, and an incomplete subscription was never activated here.
STRIPE_STATUSES = {
    "active": Status.ACTIVE,
    "past_due": Status.PAST_DUE,
    "unpaid": Status.SUSPENDED,
    "canceled": Status.CANCELLED,
    "incomplete_expired": Status.EXPIRED,
}


class ProviderStateMissing(Exception):
    """The event refers to something not recorded yet (its checkout has not arrived); Stripe's
    retry will find it."""


def _invoice_payment(invoice: dict) -> dict:
    """The payment intent and charge of the invoice's InvoicePayment: invoices of the pinned API
    version carry no `payment_intent` of their own."""
    ids = invoice_payment_ids(invoice)
    return {
        "stripe_payment_intent_id": ids.get("stripe_payment_intent_id") or None,
        "stripe_charge_id": ids.get("stripe_charge_id") or "",
    }


def _subscription_locked(stripe_subscription_id: str | None) -> Subscription | None:
    if not stripe_subscription_id:
        return None
    return Subscription.objects.select_for_update().filter(stripe_subscription_id=stripe_subscription_id).first()


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
        return timestamp_of(period["start"]), timestamp_of(period["end"])
    return timestamp_of(invoice["period_start"]), timestamp_of(invoice["period_end"])


def _invoice_subscription(row: WebhookEvent) -> tuple[dict, Subscription | None]:
    invoice = event_object(row)
    stripe_subscription_id = _invoice_subscription_id(invoice)
    subscription = _subscription_locked(stripe_subscription_id)
    if stripe_subscription_id and subscription is None:
        raise ProviderStateMissing(f"No subscription {stripe_subscription_id} yet for invoice {invoice['id']}.")
    return invoice, subscription


def _record_invoice_event(row: WebhookEvent, *, event_type: str, subscription: Subscription, amount) -> None:
    invoice = event_object(row)
    event_record(
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
        amount_paid=invoice.get("amount_paid") or 0,
        currency=invoice.get("currency") or "usd",
        period_start=period_start,
        period_end_at=period_end_at,
        renews=invoice.get("billing_reason") == "subscription_cycle",
        stripe_invoice_id=invoice["id"],
        **_invoice_payment(invoice),
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
        amount_due=invoice.get("amount_due") or 0,
        currency=invoice.get("currency") or "usd",
        period_start=period_start,
        period_end_at=period_end_at,
        reason=f"Stripe could not collect the invoice (attempt {attempt})" if attempt else "Payment failed",
        stripe_invoice_id=invoice["id"],
        stripe_payment_intent_id=_invoice_payment(invoice).get("stripe_payment_intent_id"),
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
    stripe_subscription = event_object(row)
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
    event_record(
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
    stripe_subscription = event_object(row)
    subscription = _subscription_locked(stripe_subscription["id"])
    if subscription is None:
        return None
    if transition_allowed(subscription.status, Status.CANCELLED):
        subscription_transition(subscription=subscription, status=Status.CANCELLED, reason="Stripe ended it")
    _mark_applied(subscription, row)
    subscription.save(update_fields=["provider_updated_at", "updated_at"])
    event_record(
        row,
        event_type="subscription_deleted",
        user=subscription.user,
        plan_code=subscription.tier,
        customer_id=stripe_subscription.get("customer") or "",
        subscription_id=subscription.stripe_subscription_id,
    )
    return {"action": "subscription_cancelled", "subscription_id": str(subscription.pk)}


HANDLERS = {
    "invoice.paid": _invoice_paid,
    "invoice.payment_succeeded": _invoice_paid,
    "invoice.payment_failed": _invoice_payment_failed,
    "customer.subscription.updated": _subscription_updated,
    "customer.subscription.deleted": _subscription_deleted,
}
