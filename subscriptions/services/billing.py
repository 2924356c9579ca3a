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
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of, snapshot
from billing_project.enums import SubscriptionTier
from billing_project.errors import Conflict, NotFound, RuleViolation
from billing_project.jobs import items_run
from billing_project.money import major_to_minor, minor_to_major, usd_round, usd_to_cents
from billing_project.transactions import conflict_retrying
from payments import stripe_api
from payments.models import OperationEffect, OperationKind, OperationState, Payment, PaymentOperation, WebhookProvider
from payments.registry import EffectNotApplicable
from payments.services.operations import (
    OperationInProgress,
    operation_open,
    operation_run,
    operation_unfinished_for,
    stripe_active,
)
from payments.services.refunds import payment_new, payment_new_record, payment_refund_record
from subscriptions.codes import ErrorCode
from subscriptions.models import (
    BillingInvoice,
    DunningAttempt,
    DunningResult,
    InvoiceStatus,
    PaymentStatus,
    PaymentTransaction,
    ProrationEvent,
    Subscription,
    SubscriptionStatus,
)
from subscriptions.periods import period_end
from subscriptions.selectors import customer_to_charge
from subscriptions.services.entitlements import tier_config_get
from subscriptions.services.events import invoice_payment_failed_emit, payment_failed_notify
from subscriptions.services.invoices import invoice_failed_record, invoice_paid_record, invoice_settle
from subscriptions.services.lifecycle import (
    ALLOCATED,
    period_credits_allocate,
    stripe_subscription_sync,
    subscription_lock,
    subscription_renew,
    subscription_transition,
)

logger = logging.getLogger(__name__)

Status = SubscriptionStatus
RETRIES_BY_STRIPE = "stripe"
RESTORABLE = (Status.PAST_DUE, Status.GRACE_PERIOD, Status.SUSPENDED)
ROLLS_OVER_CANCELLED = (Status.ACTIVE, *RESTORABLE)


REFUNDABLE = (PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED)


# Payments of a subscription's invoices


def payment_received(
    *, subscription: Subscription, invoice: BillingInvoice, renews: bool, invoice_new: bool = False
) -> None:
    """What a paid invoice does to its locked subscription: dunning stops (an invoice written paid
    just now, `invoice_new`, has none), a subscription behind on payments is active again, and a
    renewal invoice for a later period starts that period (once: an older or repeated invoice never
    moves the period back)."""
    if not invoice_new:
        DunningAttempt.objects.filter(invoice=invoice, result=DunningResult.SCHEDULED).update(
            result=DunningResult.CANCELLED, updated_at=timezone.now()
        )
    if subscription.status in RESTORABLE and not _other_invoice_unpaid(subscription, invoice):
        subscription_transition(subscription=subscription, status=Status.ACTIVE, reason="Payment received")
    if renews and subscription.status == Status.ACTIVE and invoice.period_start > subscription.current_period_start:
        subscription_renew(subscription=subscription, new_start=invoice.period_start, new_end=invoice.period_end)
    else:
        period_credits_allocate(subscription=subscription)


def _other_invoice_unpaid(subscription: Subscription, invoice: BillingInvoice) -> bool:
    """A late payment of one invoice restores nothing while another (a newer renewal) is unpaid:
    that one's dunning goes on to the grace period and suspension."""
    return (
        BillingInvoice.objects.filter(
            subscription=subscription, status__in=(InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)
        )
        .exclude(pk=invoice.pk)
        .exists()
    )


def invoice_paid(
    *,
    subscription: Subscription,
    amount_paid: int,
    currency: str,
    period_start: datetime,
    period_end_at: datetime,
    renews: bool,
    stripe_invoice_id: str | None = None,
    stripe_payment_intent_id: str | None = None,
    stripe_charge_id: str = "",
    stripe_invoice: dict | None = None,
    money_recorded: bool = True,
) -> BillingInvoice:
    """A subscription invoice Stripe was paid (`amount_paid` in the minor units of `currency`): the
    invoice, its payment and the payment row a refund is matched to, then what the payment does.
    `stripe_invoice` (the payload) gives a new invoice Stripe's document fields. `money_recorded`
    false: no event recorded this payment yet (its row is then most likely new)."""
    payment = None
    if amount_paid and (stripe_invoice_id or stripe_payment_intent_id):
        payment = payment_new(
            kind=OperationKind.RENEWAL_CHARGE if renews else OperationKind.SUBSCRIPTION_CHECKOUT,
            user=subscription.user,
            amount=amount_paid,
            currency=currency,
            provider=WebhookProvider.STRIPE,
            object_id=str(subscription.pk),
            stripe_invoice_id=stripe_invoice_id or "",
            stripe_payment_intent_id=stripe_payment_intent_id or "",
            stripe_charge_id=stripe_charge_id,
        )
    invoice, invoice_new, payment_inserted = invoice_paid_record(
        subscription=subscription,
        amount=amount_paid,
        currency=currency,
        period_start=period_start,
        period_end_at=period_end_at,
        description="Renewal" if renews else "Subscription payment",
        stripe_invoice_id=stripe_invoice_id,
        stripe_payment_intent_id=stripe_payment_intent_id,
        stripe_invoice=stripe_invoice,
        # Money no event recorded is most likely new with its invoice: inserted in the invoice's round trip.
        payment=None if money_recorded else payment,
    )
    if stripe_payment_intent_id:
        _payment_intent_attach(invoice=invoice, stripe_payment_intent_id=stripe_payment_intent_id)
    if payment is not None:
        payment_new_record(payment, unrecorded=not money_recorded, inserted=payment_inserted)
    payment_received(subscription=subscription, invoice=invoice, renews=renews, invoice_new=invoice_new)
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
    amount_due: int,
    currency: str = "usd",
    period_start: datetime,
    period_end_at: datetime,
    reason: str,
    stripe_invoice_id: str | None = None,
    stripe_payment_intent_id: str | None = None,
    stripe_gave_up: bool = False,
    subscription_current: bool = True,
    attempt: int = 1,
    stripe_invoice: dict | None = None,
) -> BillingInvoice:
    """A failed payment: the open invoice, the failed payment, past_due, and the retries.

    Who retries an invoice Stripe's subscription made (`stripe_invoice_id`) is PAYMENT_RETRIES_OWNER.
    `project`: the dunning retries (days 1, 3, 5, 7 after the first failure; scheduled once per
    invoice), and Stripe is told to stop its own for that invoice (after commit). `stripe`: no retry
    of ours; Stripe's last failed attempt (`stripe_gave_up`) starts the grace period, as exhausted
    retries do. A charge the project made itself is always retried by the project. A failure older
    than the newest Stripe event applied to the subscription (`subscription_current` false) is
    recorded on its invoice only. The customer is told once per invoice and `attempt` (Stripe's
    attempt count; the project's first charge is attempt 1, its retries follow)."""
    invoice = invoice_failed_record(
        subscription=subscription,
        amount_due=amount_due,
        currency=currency,
        period_start=period_start,
        period_end_at=period_end_at,
        reason=reason,
        stripe_invoice_id=stripe_invoice_id,
        stripe_payment_intent_id=stripe_payment_intent_id,
        stripe_invoice=stripe_invoice,
    )
    if invoice.status == InvoiceStatus.PAID:
        return invoice
    payment_failed_notify(invoice=invoice, attempt=attempt, reason=reason)
    if not subscription_current:
        return invoice
    if subscription.status == Status.ACTIVE:
        subscription_transition(subscription=subscription, status=Status.PAST_DUE, reason=f"Payment failed: {reason}")
    if settings.PAYMENT_RETRIES_OWNER == RETRIES_BY_STRIPE and stripe_invoice_id:
        if stripe_gave_up and subscription.status == Status.PAST_DUE:
            subscription_transition(
                subscription=subscription, status=Status.GRACE_PERIOD, reason="Stripe's payment retries exhausted"
            )
        return invoice
    if not invoice.dunning_attempts.exists():
        if stripe_invoice_id:
            stripe_subscription_sync(
                subscription=subscription,
                action="invoice_retries_off",
                reason="Payment retries are the project's",
                stripe_invoice_id=stripe_invoice_id,
            )
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


def payment_refund_recorded(*, payment: Payment) -> None:
    """Keeps the invoice's payment in step with the refunds recorded on the money received (the
    payments app matches Stripe's refunds; this is its reaction for subscription payments): the same
    refunded amount, lowered too when a refund Stripe reports failed is taken off it."""
    match = Q(pk__in=[])
    if payment.stripe_payment_intent_id:
        match |= Q(stripe_payment_intent_id=payment.stripe_payment_intent_id)
    if payment.stripe_invoice_id:
        match |= Q(
            invoice__stripe_invoice_id=payment.stripe_invoice_id, status__in=REFUNDABLE + (PaymentStatus.REFUNDED,)
        )
    # Only the payment row is locked (its invoice is joined to be found, not to be changed).
    transaction_row = (
        PaymentTransaction.objects.select_for_update(of=("self",)).filter(match).order_by("created_at").first()
    )
    if transaction_row is None:
        return
    _refunded_set(transaction_row, payment.amount_refunded, exact=True)
    transaction_row.stripe_charge_id = transaction_row.stripe_charge_id or payment.stripe_charge_id
    transaction_row.save(
        update_fields=["refunded_amount", "refunded_amount_usd", "status", "stripe_charge_id", "updated_at"]
    )


def _refunded_set(payment: PaymentTransaction, refunded: int, *, exact: bool = False) -> None:
    """The refunded amount (minor units), up to what was paid: it only grows, unless `exact` (the
    money received says so, a failed refund taken off included)."""
    payment.refunded_amount = min(refunded if exact else max(payment.refunded_amount, refunded), payment.amount)
    payment.refunded_amount_usd = min(
        usd_round(minor_to_major(payment.refunded_amount, payment.currency)), payment.amount_usd
    )
    if payment.refunded_amount > 0:
        fully = payment.refunded_amount >= payment.amount
        payment.status = PaymentStatus.REFUNDED if fully else PaymentStatus.PARTIALLY_REFUNDED
    elif payment.status in (PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED):
        payment.status = PaymentStatus.SUCCEEDED


# Refunds issued by staff

INVOICED_PAYMENT_KINDS = (
    OperationKind.SUBSCRIPTION_CHECKOUT,
    OperationKind.RENEWAL_CHARGE,
    OperationKind.DUNNING_RETRY,
    OperationKind.UPGRADE_CHARGE,
)


def _money_received_for(row: PaymentTransaction) -> Payment | None:
    """The money received (payments' `Payment`) an invoice's payment is: by the provider's ids. A
    payment through the offline provider carries none; it is the offline payment of the same user,
    subscription (its invoice, or one of its changes), amount and currency recorded with it, in the
    same transaction."""
    match = Q()
    for name, value in (
        ("stripe_payment_intent_id", row.stripe_payment_intent_id),
        ("stripe_charge_id", row.stripe_charge_id),
        ("stripe_invoice_id", row.invoice.stripe_invoice_id if row.invoice_id else None),
    ):
        if value:
            match |= Q(**{name: value})
    if match:
        return Payment.objects.filter(match).order_by("created_at").first()
    offline = Payment.objects.filter(
        provider=WebhookProvider.OFFLINE,
        user_id=row.user_id,
        kind__in=INVOICED_PAYMENT_KINDS,
        object_id__in=[
            str(row.subscription_id),
            str(row.invoice_id),
            *(
                str(pk)
                for pk in ProrationEvent.objects.filter(subscription_id=row.subscription_id).values_list(
                    "pk", flat=True
                )
            ),
        ],
        amount=row.amount,
        currency=row.currency,
    )
    return min(offline, key=lambda received: abs(received.created_at - row.created_at), default=None)


# Money received for credits (a pack bought at checkout, an auto-recharge): no invoice of ours, so
# staff refund the `payments.Payment` itself; its refund reactions take the credits back.
CREDIT_PAYMENT_KINDS = (OperationKind.CREDIT_PACK_CHECKOUT, OperationKind.CREDIT_RECHARGE)


def payment_refund(*, payment_id, amount_usd: Decimal | None, reason: str, actor) -> PaymentOperation:
    """Staff refund a payment, fully (no amount) or partly: an invoice's payment, or a credit
    purchase (`payments.Payment` of a pack or an auto-recharge). The refund is recorded before Stripe
    is asked and carries its idempotency key, so a retry never refunds twice; the payment shows it
    once Stripe confirms. Raises ProviderUnavailable (503, a retry resumes it) or ProviderError (502)."""
    operation = _refund_open(payment_id=payment_id, amount_usd=amount_usd, reason=reason, actor=actor)
    return operation_run(operation_id=operation.pk)


def _refundable_locked(payment_id) -> PaymentTransaction | Payment:
    payment = PaymentTransaction.objects.select_for_update().filter(pk=payment_id).first()
    if payment is None:
        payment = Payment.objects.select_for_update().filter(pk=payment_id, kind__in=CREDIT_PAYMENT_KINDS).first()
    if payment is None:
        detail = "No such payment."
        if Payment.objects.filter(pk=payment_id).exists():
            detail = "An invoice's payment is refunded from its payment transaction."
        raise NotFound(detail, code=ErrorCode.PAYMENT_NOT_FOUND)
    return payment


@transaction.atomic
def _refund_open(*, payment_id, amount_usd: Decimal | None, reason: str, actor) -> PaymentOperation:
    if not reason.strip():
        raise RuleViolation("A refund needs a reason.", code=ErrorCode.REASON_REQUIRED)
    payment = _refundable_locked(payment_id)
    unfinished = operation_unfinished_for(kind=OperationKind.REFUND, subject=payment)
    if unfinished is not None:
        return unfinished
    # Staff give amounts in the payment's own currency (its major unit); kept in its minor units.
    refundable = payment.amount - payment.amount_refunded
    amount = refundable if amount_usd is None else major_to_minor(amount_usd, payment.currency)
    if payment.status not in REFUNDABLE or refundable <= 0:
        raise Conflict(f"A {payment.status} payment cannot be refunded.", code=ErrorCode.PAYMENT_NOT_REFUNDABLE)
    if amount <= 0 or amount > refundable:
        refundable_major = minor_to_major(refundable, payment.currency)
        raise RuleViolation(
            f"The refund must be more than 0 and at most {refundable_major} {payment.currency.upper()}.",
            code=ErrorCode.REFUND_AMOUNT_INVALID,
            extra={"refundable_usd": str(refundable_major), "currency": payment.currency},
        )
    if stripe_active() and not (payment.stripe_payment_intent_id or payment.stripe_charge_id):
        raise Conflict("This payment was not made through Stripe.", code=ErrorCode.PAYMENT_NOT_REFUNDABLE)
    amount_major = minor_to_major(amount, payment.currency)
    operation = operation_open(
        kind=OperationKind.REFUND,
        user=payment.user,
        subject=payment,
        amount_usd=amount_major,
        currency=payment.currency,
        description=reason,
        params={
            "payment_intent": payment.stripe_payment_intent_id or "",
            "charge": payment.stripe_charge_id,
            "reason": reason,
            "actor_id": actor.pk,
            "plan_code": payment.subscription.tier if getattr(payment, "subscription_id", None) else "",
        },
    )
    audit_record(
        action=AuditAction.CREATE,
        resource_type=resource_type_of(operation),
        resource_id=str(operation.pk),
        new_value={
            "refund_of": str(payment.pk),
            "amount": amount_major,
            "currency": payment.currency,
            "reason": reason,
        },
        actor=actor,
    )
    return operation


def refund_succeeded(*, operation: PaymentOperation, facts: dict) -> dict:
    """A refund the provider confirmed: the money received records it as Stripe's refund events
    would (with what a full refund does), and the invoice's payment shows it (with every refund
    recorded so far)."""
    if operation.subject_type == resource_type_of(Payment):
        # A credit purchase: the money received is the subject; its reactions take the credits back.
        return payment_refund_record(
            payment_id=operation.subject_id,
            refund_id=operation.stripe_refund_id or f"operation_{operation.pk}",
            amount=operation.amount,
            operation_id=operation.pk,
        )
    received = _money_received_for(PaymentTransaction.objects.select_related("invoice").get(pk=operation.subject_id))
    if received is not None:
        # The money received is locked first, as Stripe's refund events lock it, then the invoice's payment.
        payment_refund_record(
            payment_id=received.pk,
            refund_id=operation.stripe_refund_id or f"operation_{operation.pk}",
            amount=operation.amount,
            operation_id=operation.pk,
        )
    payment = PaymentTransaction.objects.select_for_update().get(pk=operation.subject_id)
    previous = snapshot(payment)
    earlier = PaymentOperation.objects.filter(
        kind=OperationKind.REFUND,
        subject_type=operation.subject_type,
        subject_id=operation.subject_id,
        effect=OperationEffect.SUCCEEDED,
    ).aggregate(total=Sum("amount"))["total"]
    _refunded_set(payment, (earlier or 0) + operation.amount)
    payment.save(update_fields=["refunded_amount", "refunded_amount_usd", "status", "updated_at"])
    audit_record(
        action=AuditAction.UPDATE,
        resource_type=resource_type_of(payment),
        resource_id=str(payment.pk),
        previous_value=previous,
        new_value={**snapshot(payment), "refund_operation_id": str(operation.pk), "reason": operation.description},
        actor=get_user_model().objects.filter(pk=operation.params.get("actor_id")).first(),
    )
    return {"object_id": str(payment.pk), "refunded_amount_usd": str(payment.refunded_amount_usd)}


# Period ends and allocation (manage.py allocate_monthly_credits, daily task)


def _next_period_containing(subscription: Subscription, now: datetime) -> tuple[datetime, datetime]:
    start = subscription.current_period_end
    end = period_end(start, subscription.billing_cycle)
    while end <= now:
        start, end = end, period_end(end, subscription.billing_cycle)
    return start, end


def subscription_period_roll_over(*, subscription_id, now: datetime) -> str:
    """A period that ended without Stripe driving it: a cancellation takes effect, the free tier
    renews, an offline-billed paid plan is charged and renewed (or goes to dunning). Plans billed by
    Stripe wait for their invoice webhook. Returns what was done.

    The renewal charge is an operation keyed by the subscription and the new period, recorded before
    Stripe is asked: a re-run of the job, or a retry of its task, resumes that charge and never makes
    another. Raises ProviderUnavailable or ProviderError when Stripe could not take it now."""
    opened = _roll_over_open(subscription_id=subscription_id, now=now)
    if isinstance(opened, str):
        return opened
    try:
        operation = operation_run(operation_id=opened.pk)
    except (stripe_api.PaymentDeclined, stripe_api.ProviderError):
        return "payment_failed"  # settled failed: the subscription went to dunning
    return {OperationState.SUCCEEDED: "renewed", OperationState.SUBMITTED: "payment_pending"}.get(
        operation.state, "payment_failed"
    )


@conflict_retrying
@transaction.atomic
def _roll_over_open(*, subscription_id, now: datetime) -> str | PaymentOperation:
    subscription = subscription_lock(subscription_id)
    if subscription.current_period_end > now:
        return "nothing"
    # A cancellation takes effect at the period end whatever the payment state: no retry is owed.
    if subscription.cancel_at_period_end and subscription.status in ROLLS_OVER_CANCELLED:
        subscription_transition(subscription=subscription, status=Status.CANCELLED, reason="Cancelled at period end")
        return "cancelled"
    if subscription.status != Status.ACTIVE:
        return "nothing"
    if subscription.paused_at:
        return "paused"  # Stripe bills nothing while paused; its resumption starts the next period
    if subscription.stripe_subscription_id:
        return "awaiting_provider"
    new_start, new_end = _next_period_containing(subscription, now)
    if subscription.tier == SubscriptionTier.FREE:
        subscription_renew(subscription=subscription, new_start=new_start, new_end=new_end)
        return "renewed"
    price = subscription.base_price_usd
    if subscription.scheduled_tier:
        price = tier_config_get(subscription.scheduled_tier).price_for(subscription.billing_cycle)
    discount = min(subscription.renewal_discount_usd, price)
    amount = price - discount
    if amount <= 0:
        _renewal_paid_record(subscription, new_start, new_end, price=price, discount=discount, facts={})
        return "renewed"
    customer_id = customer_to_charge(user_id=subscription.user_id, subscription=subscription)
    if stripe_active() and not customer_id:
        invoice_payment_failed(
            subscription=subscription,
            amount_due=usd_to_cents(amount),
            period_start=new_start,
            period_end_at=new_end,
            reason="There is no card on file for this subscription.",
        )
        return "payment_failed"
    return operation_open(
        kind=OperationKind.RENEWAL_CHARGE,
        user=subscription.user,
        subject=subscription,
        amount_usd=amount,
        description=f"{SubscriptionTier(subscription.tier).label} renewal",
        natural_key=f"renewal_charge:{subscription.pk}:{new_start.isoformat()}",
        stripe_customer_id=customer_id,
        params={
            "period_start": new_start.isoformat(),
            "period_end": new_end.isoformat(),
            "price_usd": str(price),
            "discount_usd": str(discount),
            "plan_code": subscription.scheduled_tier or subscription.tier,
            "metadata": {"subscription_id": str(subscription.pk)},
        },
    )


def _renewal_paid_record(subscription, new_start, new_end, *, price: Decimal, discount: Decimal, facts: dict):
    invoice_paid_record(
        subscription=subscription,
        amount=usd_to_cents(price - discount),
        discount=usd_to_cents(discount),
        period_start=new_start,
        period_end_at=new_end,
        description="Renewal",
        stripe_invoice_id=facts.get("invoice_id") or None,
        stripe_payment_intent_id=facts.get("payment_intent_id") or None,
    )
    subscription_renew(subscription=subscription, new_start=new_start, new_end=new_end)


def _renewal_period(operation: PaymentOperation) -> tuple[datetime, datetime]:
    return parse_datetime(operation.params["period_start"]), parse_datetime(operation.params["period_end"])


def renewal_charge_succeeded(*, operation: PaymentOperation, facts: dict) -> dict:
    """A paid renewal charge: the invoice and the new period, once."""
    subscription = subscription_lock(operation.subject_id)
    new_start, new_end = _renewal_period(operation)
    if subscription.current_period_start >= new_start:
        return {"object_id": str(subscription.pk), "renewed": False}
    if subscription.status not in (Status.ACTIVE, *RESTORABLE):
        raise EffectNotApplicable(f"The subscription is {subscription.status}; its renewal no longer applies.")
    price, discount = Decimal(operation.params["price_usd"]), Decimal(operation.params["discount_usd"])
    _renewal_paid_record(subscription, new_start, new_end, price=price, discount=discount, facts=facts)
    return {"object_id": str(subscription.pk), "renewed": True}


def renewal_charge_failed(*, operation: PaymentOperation) -> None:
    """A declined renewal: the open invoice, past_due and the dunning retries. The declined Stripe
    invoice is voided; each retry charges anew."""
    subscription = subscription_lock(operation.subject_id)
    new_start, new_end = _renewal_period(operation)
    if subscription.current_period_start >= new_start or subscription.status != Status.ACTIVE:
        return
    invoice_payment_failed(
        subscription=subscription,
        amount_due=operation.amount,
        currency=operation.currency,
        period_start=new_start,
        period_end_at=new_end,
        reason=operation.last_error or "The renewal payment failed.",
    )


@conflict_retrying
@transaction.atomic
def subscription_allocate_current(*, subscription_id, now: datetime) -> bool:
    """The current credit period's allocation, if it is not there yet."""
    subscription = subscription_lock(subscription_id)
    if subscription.current_period_end <= now:
        return False  # ended: its renewal allocates the next period
    return period_credits_allocate(subscription=subscription, at=now)


def subscriptions_due_for_roll_over(*, now: datetime) -> list:
    # A paused subscription renews nothing; a cancellation at its period end still takes effect.
    due = Q(status=Status.ACTIVE, paused_at__isnull=True) | Q(
        status__in=(Status.ACTIVE, *RESTORABLE), cancel_at_period_end=True
    )
    return list(
        Subscription.objects.filter(due, current_period_end__lte=now)
        .order_by("current_period_end")
        .values_list("pk", flat=True)
    )


def subscriptions_to_allocate(*, now: datetime) -> list:
    return list(
        Subscription.objects.filter(
            status__in=ALLOCATED, monthly_credit_allocation__gt=0, current_period_end__gt=now, paused_at__isnull=True
        )
        .order_by("current_period_end")
        .values_list("pk", flat=True)
    )


# Dunning (hourly task)


def dunning_attempts_due(*, now: datetime) -> list:
    """Retries of a subscription Stripe paused wait: nothing is charged while it is paused, and its
    resumption moves them (and a grace period's end) later by the pause (`dunning_pause_shift`)."""
    return list(
        DunningAttempt.objects.filter(result=DunningResult.SCHEDULED, scheduled_at__lte=now)
        .exclude(subscription__paused_at__isnull=False)
        .order_by("scheduled_at")
        .values_list("pk", flat=True)
    )


def dunning_attempt_run(*, attempt_id, now: datetime) -> str:
    """Retries a failed invoice through Stripe (paying its Stripe invoice again, or charging anew for
    an invoice billed offline). Success restores the subscription; the last failed retry starts the
    grace period. The retry is an operation keyed by the attempt: a re-run resumes it, never charges
    twice. Raises ProviderUnavailable or ProviderError when Stripe could not take it now (the attempt
    stays scheduled)."""
    opened = _dunning_open(attempt_id=attempt_id, now=now)
    if isinstance(opened, str):
        return opened
    try:
        operation = operation_run(operation_id=opened.pk)
    except (stripe_api.PaymentDeclined, stripe_api.ProviderError):
        return DunningResult.FAILED  # settled failed: the attempt records why
    if operation.state == OperationState.SUBMITTED:
        return _dunning_attempt_processing(attempt_id=attempt_id, now=now)
    return DunningAttempt.objects.values_list("result", flat=True).get(pk=attempt_id)


@conflict_retrying
@transaction.atomic
def _dunning_open(*, attempt_id, now: datetime) -> str | PaymentOperation:
    # The subscription is locked first, then the attempt and its invoice: the order every payment
    # webhook takes them in, so a retry and an invoice.paid for the same invoice cannot deadlock.
    subscription_id = DunningAttempt.objects.values_list("subscription_id", flat=True).get(pk=attempt_id)
    subscription = subscription_lock(subscription_id) if subscription_id else None
    attempt = DunningAttempt.objects.select_for_update().select_related("invoice").get(pk=attempt_id)
    if attempt.result != DunningResult.SCHEDULED:
        return attempt.result
    if subscription is not None and subscription.paused_at:
        return "paused"  # paused since the job listed it: the attempt waits
    invoice = attempt.invoice
    if invoice.status == InvoiceStatus.PAID:
        attempt.attempted_at = now
        attempt.result = DunningResult.CANCELLED
        attempt.save(update_fields=["result", "attempted_at", "updated_at"])
        return attempt.result
    customer_id = customer_to_charge(user_id=invoice.user_id, subscription=subscription)
    if stripe_active() and not (invoice.stripe_invoice_id or customer_id):
        _dunning_attempt_failed(attempt, subscription, reason="There is no card on file for this subscription.")
        return attempt.result
    return operation_open(
        kind=OperationKind.DUNNING_RETRY,
        user=invoice.user,
        subject=invoice,
        amount_usd=minor_to_major(invoice.amount_due, invoice.currency),
        currency=invoice.currency,
        description=f"Retry of invoice {invoice.pk}",
        natural_key=f"dunning_retry:{attempt.pk}",
        stripe_customer_id=customer_id,
        params={
            "attempt_id": str(attempt.pk),
            "existing_invoice": invoice.stripe_invoice_id or "",
            "plan_code": subscription.tier if subscription else "",
            "metadata": {"invoice_id": str(invoice.pk), "dunning_attempt_id": str(attempt.pk)},
        },
    )


@transaction.atomic
def _dunning_attempt_processing(*, attempt_id, now: datetime) -> str:
    """The retry's payment is in flight (an asynchronous method): its webhook settles it."""
    attempt = DunningAttempt.objects.select_for_update().get(pk=attempt_id)
    if attempt.result == DunningResult.SCHEDULED:
        attempt.result = DunningResult.PROCESSING
        attempt.attempted_at = now
        attempt.save(update_fields=["result", "attempted_at", "updated_at"])
    return attempt.result


def _dunning_locked(operation: PaymentOperation) -> tuple[Subscription | None, DunningAttempt]:
    subscription_id = BillingInvoice.objects.values_list("subscription_id", flat=True).get(pk=operation.subject_id)
    subscription = subscription_lock(subscription_id) if subscription_id else None
    attempt = (
        DunningAttempt.objects.select_for_update().select_related("invoice").get(pk=operation.params["attempt_id"])
    )
    return subscription, attempt


def dunning_retry_succeeded(*, operation: PaymentOperation, facts: dict) -> dict:
    """The retry was paid: the invoice is settled and the subscription restored."""
    subscription, attempt = _dunning_locked(operation)
    invoice = BillingInvoice.objects.select_for_update().get(pk=attempt.invoice_id)
    attempt.result = DunningResult.SUCCEEDED
    attempt.attempted_at = attempt.attempted_at or timezone.now()
    attempt.save(update_fields=["result", "attempted_at", "updated_at"])
    if not invoice.stripe_invoice_id and facts.get("invoice_id"):
        invoice.stripe_invoice_id = facts["invoice_id"]
        invoice.save(update_fields=["stripe_invoice_id", "updated_at"])
    invoice_settle(invoice=invoice, stripe_payment_intent_id=facts.get("payment_intent_id") or None)
    if subscription is not None:
        payment_received(subscription=subscription, invoice=invoice, renews=True)
    return {"object_id": str(invoice.pk), "dunning_attempt_id": str(attempt.pk)}


def dunning_retry_failed(*, operation: PaymentOperation) -> None:
    subscription, attempt = _dunning_locked(operation)
    if attempt.result in (DunningResult.SCHEDULED, DunningResult.PROCESSING):
        _dunning_attempt_failed(attempt, subscription, reason=operation.last_error or "The payment was declined.")


def _dunning_attempt_failed(attempt: DunningAttempt, subscription: Subscription | None, *, reason: str) -> None:
    attempt.result = DunningResult.FAILED
    attempt.failure_reason = reason[:1000]
    attempt.attempted_at = attempt.attempted_at or timezone.now()
    attempt.save(update_fields=["result", "failure_reason", "attempted_at", "updated_at"])
    invoice_payment_failed_emit(invoice=attempt.invoice, reason=reason)
    # The first charge was attempt 1: retry n is the invoice's attempt n + 1.
    payment_failed_notify(invoice=attempt.invoice, attempt=attempt.attempt_number + 1, reason=reason)
    retries_left = attempt.invoice.dunning_attempts.filter(result=DunningResult.SCHEDULED).exists()
    if not retries_left and subscription is not None and subscription.status == Status.PAST_DUE:
        subscription_transition(
            subscription=subscription, status=Status.GRACE_PERIOD, reason="Payment retries exhausted"
        )


def grace_periods_ended(*, now: datetime) -> list:
    return list(
        Subscription.objects.filter(status=Status.GRACE_PERIOD, grace_period_ends_at__lte=now, paused_at__isnull=True)
        .order_by("grace_period_ends_at")
        .values_list("pk", flat=True)
    )


@transaction.atomic
def grace_period_end(*, subscription_id, now: datetime) -> bool:
    subscription = subscription_lock(subscription_id)
    if subscription.status != Status.GRACE_PERIOD or subscription.grace_period_ends_at > now or subscription.paused_at:
        return False
    subscription_transition(subscription=subscription, status=Status.SUSPENDED, reason="Grace period ended unpaid")
    return True


def dunning_pause_shift(*, subscription: Subscription, paused_for: timedelta) -> None:
    """A locked subscription resumed after `paused_for`: its scheduled retries and the end of its
    grace period move later by as much, so the pause takes none of the customer's time to pay."""
    if paused_for <= timedelta(0):
        return
    DunningAttempt.objects.filter(subscription=subscription, result=DunningResult.SCHEDULED).update(
        scheduled_at=F("scheduled_at") + paused_for, updated_at=timezone.now()
    )
    if subscription.status == Status.GRACE_PERIOD and subscription.grace_period_ends_at:
        subscription.grace_period_ends_at += paused_for


def dunning_run(*, now: datetime | None = None) -> Counter:
    """One pass of dunning: due retries, then ended grace periods. Returns counts by outcome. Each
    retry is its own unit: one the payment provider could not take now stays scheduled for the next
    pass (`retry_deferred`), one that failed otherwise is counted and logged; the others go on."""
    now = now or timezone.now()

    def retry(attempt_id) -> str:
        try:
            return f"retry_{dunning_attempt_run(attempt_id=attempt_id, now=now)}"
        except (stripe_api.ProviderUnavailable, OperationInProgress):
            return "retry_deferred"

    def suspend(subscription_id) -> str | None:
        return "suspended" if grace_period_end(subscription_id=subscription_id, now=now) else None

    outcomes = items_run(job="dunning", items=dunning_attempts_due(now=now), work=retry)
    outcomes.update(items_run(job="dunning", items=grace_periods_ended(now=now), work=suspend))
    return outcomes
