"""Money over time: renewals and their credits, failed payments and dunning, refunds.

The periodic jobs (subscriptions.tasks, and the commands that run the same functions) find their
work with one query and handle each subscription in its own transaction under its row lock, so a
retried or overlapping run finds nothing left to do.
"""

import logging
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing_project import payments
from billing_project.enums import SubscriptionTier
from billing_project.errors import ServiceUnavailable
from subscriptions.models import (
    BillingInvoice,
    DunningAttempt,
    DunningResult,
    InvoiceStatus,
    PaymentStatus,
    PaymentTransaction,
    Subscription,
    SubscriptionStatus,
)
from subscriptions.periods import period_end
from subscriptions.services.entitlements import tier_config_get
from subscriptions.services.invoices import invoice_failed_record, invoice_paid_record, invoice_settle
from subscriptions.services.lifecycle import (
    ALLOCATED,
    period_credits_allocate,
    subscription_lock,
    subscription_renew,
    subscription_transition,
)

logger = logging.getLogger(__name__)

Status = SubscriptionStatus
RESTORABLE = (Status.PAST_DUE, Status.GRACE_PERIOD, Status.SUSPENDED)
ROLLS_OVER_CANCELLED = (Status.ACTIVE, *RESTORABLE)


# Payments of a subscription's invoices


def payment_received(*, subscription: Subscription, invoice: BillingInvoice, renews: bool) -> None:
    """What a paid invoice does to its locked subscription: dunning stops, a subscription behind on
    payments is active again, and a renewal invoice for a later period starts that period (once: an
    older or repeated invoice never moves the period back)."""
    DunningAttempt.objects.filter(invoice=invoice, result=DunningResult.SCHEDULED).update(
        result=DunningResult.CANCELLED, updated_at=timezone.now()
    )
    if subscription.status in RESTORABLE:
        subscription_transition(subscription=subscription, status=Status.ACTIVE, reason="Payment received")
    if renews and subscription.status == Status.ACTIVE and invoice.period_start > subscription.current_period_start:
        subscription_renew(subscription=subscription, new_start=invoice.period_start, new_end=invoice.period_end)
    else:
        period_credits_allocate(subscription=subscription)


def invoice_paid(
    *,
    subscription: Subscription,
    amount_paid_usd: Decimal,
    period_start: datetime,
    period_end_at: datetime,
    renews: bool,
    stripe_invoice_id: str | None = None,
    stripe_payment_intent_id: str | None = None,
) -> BillingInvoice:
    invoice = invoice_paid_record(
        subscription=subscription,
        amount_usd=amount_paid_usd,
        period_start=period_start,
        period_end_at=period_end_at,
        description="Renewal" if renews else "Subscription payment",
        stripe_invoice_id=stripe_invoice_id,
        stripe_payment_intent_id=stripe_payment_intent_id,
    )
    if stripe_payment_intent_id:
        _payment_intent_attach(invoice=invoice, stripe_payment_intent_id=stripe_payment_intent_id)
    payment_received(subscription=subscription, invoice=invoice, renews=renews)
    return invoice


def _payment_intent_attach(*, invoice: BillingInvoice, stripe_payment_intent_id: str) -> None:
    """A Stripe checkout in subscription mode names no payment intent; its invoice does, when it is
    paid. The payment the checkout recorded takes it, so that a refund of that payment is found."""
    if PaymentTransaction.objects.filter(stripe_payment_intent_id=stripe_payment_intent_id).exists():
        return
    payment = PaymentTransaction.objects.filter(invoice=invoice, stripe_payment_intent_id__isnull=True).first()
    if payment is not None:
        payment.stripe_payment_intent_id = stripe_payment_intent_id
        payment.save(update_fields=["stripe_payment_intent_id", "updated_at"])


def invoice_payment_failed(
    *,
    subscription: Subscription,
    amount_due_usd: Decimal,
    period_start: datetime,
    period_end_at: datetime,
    reason: str,
    stripe_invoice_id: str | None = None,
    stripe_payment_intent_id: str | None = None,
) -> BillingInvoice:
    """A failed payment: the open invoice, the failed payment, past_due, and the dunning retries
    (days 1, 3, 5, 7 after the first failure; scheduled once per invoice)."""
    invoice = invoice_failed_record(
        subscription=subscription,
        amount_due_usd=amount_due_usd,
        period_start=period_start,
        period_end_at=period_end_at,
        reason=reason,
        stripe_invoice_id=stripe_invoice_id,
        stripe_payment_intent_id=stripe_payment_intent_id,
    )
    if invoice.status == InvoiceStatus.PAID:
        return invoice
    if subscription.status == Status.ACTIVE:
        subscription_transition(subscription=subscription, status=Status.PAST_DUE, reason=f"Payment failed: {reason}")
    if not invoice.dunning_attempts.exists():
        failed_at = timezone.now()
        DunningAttempt.objects.bulk_create(
            DunningAttempt(
                user=subscription.user,
                invoice=invoice,
                subscription=subscription,
                attempt_number=number,
                scheduled_at=failed_at + timedelta(days=days),
            )
            for number, days in enumerate(settings.DUNNING_RETRY_DAYS, start=1)
        )
    return invoice


@transaction.atomic
def payment_refunded(
    *, stripe_payment_intent_id: str, refunded_usd: Decimal, charge_id: str = ""
) -> PaymentTransaction | None:
    """Records a refund (full or partial) on its payment. Idempotent: the amount is the total
    refunded so far, as Stripe reports it. None when the payment is not ours."""
    payment = (
        PaymentTransaction.objects.select_for_update()
        .select_related("user")
        .filter(stripe_payment_intent_id=stripe_payment_intent_id)
        .first()
    )
    if payment is None:
        return None
    payment.refunded_amount_usd = min(refunded_usd, payment.amount_usd)
    fully = payment.refunded_amount_usd >= payment.amount_usd
    payment.status = PaymentStatus.REFUNDED if fully else PaymentStatus.PARTIALLY_REFUNDED
    payment.stripe_charge_id = charge_id or payment.stripe_charge_id
    payment.save(update_fields=["refunded_amount_usd", "status", "stripe_charge_id", "updated_at"])
    return payment


# Period ends and allocation (manage.py allocate_monthly_credits, daily task)


def _next_period_containing(subscription: Subscription, now: datetime) -> tuple[datetime, datetime]:
    start = subscription.current_period_end
    end = period_end(start, subscription.billing_cycle)
    while end <= now:
        start, end = end, period_end(end, subscription.billing_cycle)
    return start, end


@transaction.atomic
def subscription_period_roll_over(*, subscription_id, now: datetime) -> str:
    """A period that ended without Stripe driving it: a cancellation takes effect, the free tier
    renews, an offline-billed paid plan is charged and renewed (or goes to dunning). Plans billed by
    Stripe wait for their invoice webhook. Returns what was done."""
    subscription = subscription_lock(subscription_id)
    if subscription.current_period_end > now:
        return "nothing"
    # A cancellation takes effect at the period end whatever the payment state: no retry is owed.
    if subscription.cancel_at_period_end and subscription.status in ROLLS_OVER_CANCELLED:
        subscription_transition(subscription=subscription, status=Status.CANCELLED, reason="Cancelled at period end")
        return "cancelled"
    if subscription.status != Status.ACTIVE:
        return "nothing"
    if subscription.stripe_subscription_id:
        return "awaiting_provider"
    new_start, new_end = _next_period_containing(subscription, now)
    if subscription.tier != SubscriptionTier.FREE:
        price = subscription.base_price_usd
        if subscription.scheduled_tier:
            price = tier_config_get(subscription.scheduled_tier).price_for(subscription.billing_cycle)
        discount = min(subscription.renewal_discount_usd, price)
        provider_invoice_id = None
        try:
            if price - discount > 0:
                provider_invoice_id = payments.charge_now(
                    customer_id=subscription.stripe_customer_id,
                    amount_usd=price - discount,
                    description=f"{SubscriptionTier(subscription.tier).label} renewal",
                    metadata={"subscription_id": subscription.pk},
                )
        except payments.PaymentRequired as refused:
            invoice_payment_failed(
                subscription=subscription,
                amount_due_usd=price - discount,
                period_start=new_start,
                period_end_at=new_end,
                reason=refused.detail,
            )
            return "payment_failed"
        invoice_paid_record(
            subscription=subscription,
            amount_usd=price - discount,
            discount_usd=discount,
            period_start=new_start,
            period_end_at=new_end,
            description="Renewal",
            stripe_invoice_id=provider_invoice_id,
        )
    subscription_renew(subscription=subscription, new_start=new_start, new_end=new_end)
    return "renewed"


@transaction.atomic
def subscription_allocate_current(*, subscription_id, now: datetime) -> bool:
    """The current credit period's allocation, if it is not there yet."""
    subscription = subscription_lock(subscription_id)
    if subscription.current_period_end <= now:
        return False  # ended: its renewal allocates the next period
    return period_credits_allocate(subscription=subscription, at=now)


def subscriptions_due_for_roll_over(*, now: datetime) -> list:
    due = Q(status=Status.ACTIVE) | Q(status__in=RESTORABLE, cancel_at_period_end=True)
    return list(
        Subscription.objects.filter(due, current_period_end__lte=now)
        .order_by("current_period_end")
        .values_list("pk", flat=True)
    )


def subscriptions_to_allocate(*, now: datetime) -> list:
    return list(
        Subscription.objects.filter(status__in=ALLOCATED, monthly_credit_allocation__gt=0, current_period_end__gt=now)
        .order_by("current_period_end")
        .values_list("pk", flat=True)
    )


# Dunning (hourly task)


def dunning_attempts_due(*, now: datetime) -> list:
    return list(
        DunningAttempt.objects.filter(result=DunningResult.SCHEDULED, scheduled_at__lte=now)
        .order_by("scheduled_at")
        .values_list("pk", flat=True)
    )


@transaction.atomic
def dunning_attempt_run(*, attempt_id, now: datetime) -> str:
    """Retries a failed invoice through Stripe (or the offline provider). Success restores the
    subscription; the last failed retry starts the grace period."""
    # The subscription is locked first, then the attempt and its invoice: the order every payment
    # webhook takes them in, so a retry and an invoice.paid for the same invoice cannot deadlock.
    subscription_id = DunningAttempt.objects.values_list("subscription_id", flat=True).get(pk=attempt_id)
    subscription = subscription_lock(subscription_id) if subscription_id else None
    attempt = DunningAttempt.objects.select_for_update().select_related("invoice").get(pk=attempt_id)
    if attempt.result != DunningResult.SCHEDULED:
        return attempt.result
    invoice = attempt.invoice
    attempt.attempted_at = now
    if invoice.status == InvoiceStatus.PAID:
        attempt.result = DunningResult.CANCELLED
        attempt.save(update_fields=["result", "attempted_at", "updated_at"])
        return attempt.result
    try:
        if invoice.stripe_invoice_id:
            payments.invoice_collect(provider_invoice_id=invoice.stripe_invoice_id)
        else:
            invoice.stripe_invoice_id = payments.charge_now(
                customer_id=subscription.stripe_customer_id if subscription else None,
                amount_usd=invoice.amount_due_usd,
                description=f"Retry of invoice {invoice.pk}",
                metadata={"invoice_id": invoice.pk},
            )
    except payments.PaymentRequired as refused:
        attempt.result = DunningResult.FAILED
        attempt.failure_reason = refused.detail
        attempt.save(update_fields=["result", "failure_reason", "attempted_at", "updated_at"])
        retries_left = invoice.dunning_attempts.filter(result=DunningResult.SCHEDULED).exists()
        if not retries_left and subscription is not None and subscription.status == Status.PAST_DUE:
            subscription_transition(
                subscription=subscription, status=Status.GRACE_PERIOD, reason="Payment retries exhausted"
            )
        return attempt.result
    attempt.result = DunningResult.SUCCEEDED
    attempt.save(update_fields=["result", "attempted_at", "updated_at"])
    invoice_settle(invoice=invoice)
    if invoice.stripe_invoice_id:
        invoice.save(update_fields=["stripe_invoice_id", "updated_at"])
    if subscription is not None:
        payment_received(subscription=subscription, invoice=invoice, renews=True)
    return attempt.result


def grace_periods_ended(*, now: datetime) -> list:
    return list(
        Subscription.objects.filter(status=Status.GRACE_PERIOD, grace_period_ends_at__lte=now)
        .order_by("grace_period_ends_at")
        .values_list("pk", flat=True)
    )


@transaction.atomic
def grace_period_end(*, subscription_id, now: datetime) -> bool:
    subscription = subscription_lock(subscription_id)
    if subscription.status != Status.GRACE_PERIOD or subscription.grace_period_ends_at > now:
        return False
    subscription_transition(subscription=subscription, status=Status.SUSPENDED, reason="Grace period ended unpaid")
    return True


def dunning_run(*, now: datetime | None = None) -> Counter:
    """One pass of dunning: due retries, then ended grace periods. Returns counts by outcome. A retry
    the payment provider could not take now stays scheduled for the next pass; the others go on."""
    now = now or timezone.now()
    outcomes = Counter()
    for attempt_id in dunning_attempts_due(now=now):
        try:
            outcomes[f"retry_{dunning_attempt_run(attempt_id=attempt_id, now=now)}"] += 1
        except ServiceUnavailable:
            outcomes["retry_deferred"] += 1
    for subscription_id in grace_periods_ended(now=now):
        outcomes["suspended"] += grace_period_end(subscription_id=subscription_id, now=now)
    return outcomes
