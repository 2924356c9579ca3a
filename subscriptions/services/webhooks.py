"""Subscriptions' Stripe event handlers for money, registered with the payments inbox
(subscriptions.apps): renewals and failed payments of Stripe-billed subscriptions (Stripe-side
subscription changes: subscriptions.services.stripe_events; refunds and disputes:
payments.services.refunds). Events that settle a payment operation (a checkout, a one-off charge)
are handled by payments before these are tried."""

import logging

from billing_project import sql
from payments.models import PaymentEvent, WebhookEvent
from payments.registry import Unmatched
from payments.services.inbox import event_audit, event_object, event_record, fetched_object
from payments.services.refunds import invoice_payment_ids
from subscriptions.models import Subscription
from subscriptions.services import billing
from subscriptions.services.invoices import invoice_amounts_update, invoice_document_update
from subscriptions.services.stripe_events import (
    adoptable_user,
    applied_save,
    invoice_period,
    invoice_subscription_id,
    newer_than_applied,
    subscription_adopted,
    subscription_locked_reading,
    subscription_locked_statements,
)

logger = logging.getLogger(__name__)

# The payment events that record money received for an invoice.
MONEY_IN_EVENT_TYPES = ("invoice_paid", "checkout_completed", "charge_succeeded")


def _invoice_payment(invoice: dict) -> dict:
    """The payment intent and charge of the invoice's InvoicePayment: invoices of the pinned API
    version carry no `payment_intent` of their own."""
    ids = invoice_payment_ids(invoice)
    return {
        "stripe_payment_intent_id": ids.get("stripe_payment_intent_id") or None,
        "stripe_charge_id": ids.get("stripe_charge_id") or "",
    }


def _invoice_subscription(
    row: WebhookEvent, reads: list[sql.Statement]
) -> tuple[dict, Subscription, list[list[tuple]]]:
    """The invoice, its locked subscription, and the rows of `reads` (run in the lock's round trip)."""
    invoice = event_object(row)
    stripe_subscription_id = invoice_subscription_id(invoice)
    subscription, results = subscription_locked_reading(stripe_subscription_id, reads)
    stripe_subscription = fetched_object(row, stripe_subscription_id) if stripe_subscription_id else None
    user = adoptable_user(stripe_subscription) if subscription is None and stripe_subscription else None
    if user is not None:
        # The invoice of a subscription created on Stripe's side came first: it begins here now.
        subscription = subscription_adopted(row, stripe_subscription, user=user)
    if subscription is None:
        if stripe_subscription_id:
            raise Unmatched(f"No subscription {stripe_subscription_id} here for invoice {invoice['id']}.")
        raise Unmatched(f"Invoice {invoice['id']} names no subscription and no payment of ours.")
    return invoice, subscription, results


def _money_recorded_read(invoice_id: str) -> sql.Statement:
    """Whether the money of the invoice is recorded (a row): invoice.paid and
    invoice.payment_succeeded are one payment (as is a checkout's first invoice), recorded by
    whichever came first."""
    event_types, event_types_params = sql.one_of(list(MONEY_IN_EVENT_TYPES))
    where = f"invoice_id = %s AND event_type {event_types}"
    return sql.exists_statement(PaymentEvent, where), [invoice_id, *event_types_params]


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


def _invoice_reads(row: WebhookEvent) -> list[sql.Statement]:
    """What `_invoice_subscription` reads for the event's handler (the event reads of the invoice events)."""
    invoice = event_object(row)
    if not invoice.get("id"):
        return []
    reads = [_money_recorded_read(invoice["id"])] if HANDLERS.get(row.event_type) is _invoice_paid else []
    return subscription_locked_statements(invoice_subscription_id(invoice), reads)


def _invoice_paid(row: WebhookEvent) -> dict | None:
    invoice, subscription, (money_recorded,) = _invoice_subscription(
        row, [_money_recorded_read(event_object(row)["id"])]
    )
    already_recorded = bool(money_recorded)
    period_start, period_end_at = invoice_period(invoice, subscription)
    paid = billing.invoice_paid(
        subscription=subscription,
        amount_paid=invoice.get("amount_paid") or 0,
        currency=invoice.get("currency") or "usd",
        period_start=period_start,
        period_end_at=period_end_at,
        renews=invoice.get("billing_reason") == "subscription_cycle",
        stripe_invoice_id=invoice["id"],
        stripe_invoice=invoice,
        money_recorded=already_recorded,
        **_invoice_payment(invoice),
    )
    invoice_document_update(invoice=paid, stripe_invoice=invoice)
    corrected = invoice_amounts_update(invoice=paid, stripe_invoice=invoice, reason=f"Stripe: {row.event_id}")
    applied_save(subscription, row)
    if already_recorded:
        event_audit(row, invoice_id=invoice["id"], already_recorded=True, amounts_corrected=corrected)
    else:
        _record_invoice_event(
            row, event_type="invoice_paid", subscription=subscription, amount=invoice.get("amount_paid")
        )
    return {
        "action": "invoice_paid",
        "already_recorded": already_recorded,
        "amounts_corrected": corrected,
        "invoice_id": str(paid.pk),
        "subscription_id": str(subscription.pk),
        "subscription_status": subscription.status,
        "current_period_end": subscription.current_period_end,
    }


def _invoice_payment_failed(row: WebhookEvent) -> dict | None:
    invoice, subscription, _ = _invoice_subscription(row, [])
    period_start, period_end_at = invoice_period(invoice, subscription)
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
        stripe_gave_up=invoice.get("next_payment_attempt") is None,
        subscription_current=newer_than_applied(subscription, row),
        attempt=attempt or 1,
        stripe_invoice=invoice,
    )
    invoice_amounts_update(invoice=failed, stripe_invoice=invoice, reason=f"Stripe: {row.event_id}")
    applied_save(subscription, row)
    _record_invoice_event(
        row, event_type="invoice_payment_failed", subscription=subscription, amount=invoice.get("amount_due")
    )
    return {
        "action": "invoice_payment_failed",
        "invoice_id": str(failed.pk),
        "subscription_id": str(subscription.pk),
        "subscription_status": subscription.status,
    }


HANDLERS = {
    "invoice.paid": _invoice_paid,
    "invoice.payment_succeeded": _invoice_paid,
    "invoice.payment_failed": _invoice_payment_failed,
}
READS = dict.fromkeys(HANDLERS, _invoice_reads)
