"""What subscriptions tell the outside (billing_project.outbound), in the transaction of the change:
a subscription's start, its status, tier and cancellation changes, and its invoices' payments.

The free plan every user falls back to is no subscription to announce: its rows emit nothing."""

from datetime import datetime

from billing_project.enums import EventType, SubscriptionTier
from billing_project.money import minor_to_text
from billing_project.outbound import event_emit, notify
from subscriptions.models import BillingInvoice, Subscription, SubscriptionStatus

ENDED = (SubscriptionStatus.CANCELLED, SubscriptionStatus.EXPIRED)
# What a subscription.updated is about; any other change (a period extended, a renewal's dates) is not one.
WATCHED_FIELDS = ("status", "tier", "cancel_at_period_end")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def subscription_data(subscription: Subscription) -> dict:
    return {
        "id": str(subscription.pk),
        "user_id": str(subscription.user_id),
        "tier": subscription.tier,
        "status": subscription.status,
        "billing_cycle": subscription.billing_cycle,
        "current_period_start": _iso(subscription.current_period_start),
        "current_period_end": _iso(subscription.current_period_end),
        "cancel_at_period_end": subscription.cancel_at_period_end,
    }


def watched_fields(subscription: Subscription) -> dict:
    """The fields a subscription.updated compares, as they are now (the `previous` of a later change)."""
    return {name: getattr(subscription, name) for name in WATCHED_FIELDS}


def subscription_created_emit(*, subscription: Subscription) -> None:
    """subscription.created: a trial or a paid subscription began."""
    if subscription.tier == SubscriptionTier.FREE:
        return
    event_emit(
        type=EventType.SUBSCRIPTION_CREATED,
        subject=f"subscription:{subscription.pk}",
        data=subscription_data(subscription),
        user=subscription.user,
    )


def subscription_changed_emit(*, subscription: Subscription, previous: dict) -> None:
    """subscription.cancelled when it ended now (cancelled or expired), else subscription.updated with
    the watched fields that changed since `previous` (an audit snapshot, or `watched_fields`); nothing
    when none did."""
    changed = {name: previous.get(name) for name in WATCHED_FIELDS if previous.get(name) != getattr(subscription, name)}
    if not changed or (subscription.tier == SubscriptionTier.FREE and previous.get("tier") == SubscriptionTier.FREE):
        return
    if subscription.status in ENDED:
        if previous.get("status") in ENDED:
            return
        event_type, data = EventType.SUBSCRIPTION_CANCELLED, subscription_data(subscription)
    else:
        event_type, data = EventType.SUBSCRIPTION_UPDATED, {**subscription_data(subscription), "previous": changed}
    event_emit(type=event_type, subject=f"subscription:{subscription.pk}", data=data, user=subscription.user)


def invoice_data(invoice: BillingInvoice) -> dict:
    return {
        "id": str(invoice.pk),
        "user_id": str(invoice.user_id),
        "subscription_id": str(invoice.subscription_id) if invoice.subscription_id else None,
        "status": invoice.status,
        "amount_due": minor_to_text(invoice.amount_due, invoice.currency),
        "amount_paid": minor_to_text(invoice.amount_paid, invoice.currency),
        "currency": invoice.currency,
        "period_start": _iso(invoice.period_start),
        "period_end": _iso(invoice.period_end),
        "paid_at": _iso(invoice.paid_at),
        "number": invoice.number,
        "hosted_invoice_url": invoice.hosted_invoice_url,
    }


def invoice_paid_emit(*, invoice: BillingInvoice) -> None:
    event_emit(
        type=EventType.INVOICE_PAID, subject=f"invoice:{invoice.pk}", data=invoice_data(invoice), user=invoice.user
    )


def invoice_payment_failed_emit(*, invoice: BillingInvoice, reason: str) -> None:
    event_emit(
        type=EventType.INVOICE_PAYMENT_FAILED,
        subject=f"invoice:{invoice.pk}",
        data={**invoice_data(invoice), "failure_reason": reason},
        user=invoice.user,
    )


def payment_failed_notify(*, invoice: BillingInvoice, attempt: int, reason: str) -> None:
    """Tells the customer a payment of their subscription failed (payment.failed), once per invoice
    and attempt: a repeated event or job run about the same attempt sends nothing again."""
    subscription = invoice.subscription
    notify(
        user=invoice.user,
        kind=EventType.PAYMENT_FAILED,
        occurrence=f"{invoice.pk}:{attempt}",
        subject=f"invoice:{invoice.pk}",
        context={
            "invoice_id": str(invoice.pk),
            "subscription_id": str(subscription.pk) if subscription else None,
            "tier": subscription.tier if subscription else "",
            "tier_name": SubscriptionTier(subscription.tier).label if subscription else "",
            "amount_due": minor_to_text(invoice.amount_due, invoice.currency),
            "currency": invoice.currency,
            "attempt": attempt,
            "reason": reason,
            "hosted_invoice_url": invoice.hosted_invoice_url,
        },
    )
