"""The subscription lifecycle: the state machine, starting (trial or checkout), paid checkouts,
renewals and their credits, tier changes with proration, cancellation and staff status changes.

Every write locks the subscription row first (`select_for_update`) and is audited in its transaction.
A user always has one live subscription: when a paid one ends, they fall back to the free tier.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of, snapshot
from billing_project.auth import acts_as_staff
from billing_project.email_verification import email_is_verified
from billing_project.enums import BillingCycle, SubscriptionTier
from billing_project.errors import Conflict, NotFound, PaymentRequired, RuleViolation
from billing_project.money import major_to_minor, usd_to_cents
from billing_project.net import ClientInfo
from billing_project.rows import row_update
from credits.models import CreditAllocation, CreditSource
from credits.services import allocations_claw_back, credit_grant
from payments.models import OperationKind, PaymentOperation
from payments.registry import EffectNotApplicable
from payments.services.checkouts import Checkout, checkout_open, checkout_run
from payments.services.operations import (
    operation_after_commit,
    operation_open,
    operation_run,
    operation_unfinished_for,
    stripe_active,
)
from subscriptions import discounts, proration
from subscriptions.codes import ErrorCode
from subscriptions.models import (
    LIVE_STATUSES,
    ChangeType,
    ProrationEvent,
    ProrationStatus,
    Subscription,
    SubscriptionStatus,
    TierConfig,
)
from subscriptions.periods import add_months, period_end
from subscriptions.selectors import customer_to_charge
from subscriptions.services.entitlements import credits_tier_push, entitlement_activate, tier_config_get
from subscriptions.services.events import subscription_changed_emit, subscription_created_emit
from subscriptions.services.invoices import invoice_paid_record

logger = logging.getLogger(__name__)

NOT_SUBSCRIBABLE = (SubscriptionTier.FREE, SubscriptionTier.PERPETUAL)
LONGEST_MONTH = timedelta(days=31)
RECURRING_INTERVALS = {BillingCycle.MONTHLY: "month", BillingCycle.ANNUAL: "year"}
STAFF_CHANGE_PERMISSION = "subscriptions.change_subscription"

Status = SubscriptionStatus
TRANSITIONS = {
    Status.TRIAL: {Status.ACTIVE, Status.EXPIRED, Status.CANCELLED},
    Status.ACTIVE: {Status.PAST_DUE, Status.CANCELLED, Status.EXPIRED},
    Status.PAST_DUE: {Status.ACTIVE, Status.GRACE_PERIOD, Status.SUSPENDED, Status.CANCELLED},
    Status.GRACE_PERIOD: {Status.ACTIVE, Status.SUSPENDED, Status.CANCELLED},
    Status.SUSPENDED: {Status.ACTIVE, Status.CANCELLED},
}
ENDED = (Status.CANCELLED, Status.EXPIRED)
# Statuses whose current credit period is allocated.
ALLOCATED = (Status.TRIAL, Status.ACTIVE)


def transition_allowed(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, ())


# FOR NO KEY UPDATE: the subscription is locked before the user's balance (billing_project.transactions),
# while ledger rows written under a balance lock reference it, and their foreign key takes FOR KEY
# SHARE on it: with FOR UPDATE, a renewal holding the subscription and waiting for the balance, and a
# usage record holding the balance and inserting its ledger row, would deadlock.
def subscription_lock(subscription_id) -> Subscription:
    subscription = Subscription.objects.select_for_update(no_key=True).filter(pk=subscription_id).first()
    if subscription is None:
        raise NotFound("No such subscription.", code=ErrorCode.SUBSCRIPTION_NOT_FOUND)
    return subscription


def live_subscription_lock(user_id) -> Subscription | None:
    return Subscription.objects.select_for_update(no_key=True).filter(user_id=user_id, status__in=LIVE_STATUSES).first()


def _audit(action: AuditAction, subscription: Subscription, *, previous=None, actor=None, **extra) -> None:
    """Audits a change of the subscription and tells the outside of it (subscription.created, or
    .updated/.cancelled when its status, tier or cancellation changed since `previous`): every
    change of the lifecycle comes through here, in its transaction."""
    if action == AuditAction.CREATE:
        subscription_created_emit(subscription=subscription)
    elif previous is not None:
        subscription_changed_emit(subscription=subscription, previous=previous)
    audit_record(
        action=action,
        resource_type=resource_type_of(subscription),
        resource_id=str(subscription.pk),
        previous_value=previous,
        new_value={**snapshot(subscription), **extra},
        actor=actor,
    )


def subscription_transition(
    *,
    subscription: Subscription,
    status: str,
    reason: str,
    actor=None,
    fall_back_to_free: bool = True,
    previous: dict | None = None,
) -> Subscription:
    """Moves a locked subscription along the state machine (409 `invalid_transition` otherwise),
    keeps the user's entitlements in step and audits the change. An ended paid subscription puts
    the user back on the free tier unless the caller replaces it. A caller that changed other
    fields first passes the `previous` snapshot it took before them."""
    if not transition_allowed(subscription.status, status):
        raise Conflict(
            f"A {subscription.status} subscription cannot become {status}.",
            code=ErrorCode.INVALID_TRANSITION,
            extra={"from_status": subscription.status, "to_status": status},
        )
    previous = previous or snapshot(subscription)
    now = timezone.now()
    subscription.status = status
    if status == Status.CANCELLED:
        subscription.cancelled_at = now
    subscription.grace_period_ends_at = (
        now + timedelta(days=settings.DUNNING_GRACE_PERIOD_DAYS) if status == Status.GRACE_PERIOD else None
    )
    subscription.save()
    _audit(AuditAction.TRANSITION, subscription, previous=previous, actor=actor, reason=reason)

    if status == Status.ACTIVE:
        entitlement_activate(user=subscription.user, tier=subscription.tier)
    elif status == Status.SUSPENDED:
        entitlement_activate(user=subscription.user, tier=SubscriptionTier.FREE)
    elif status in ENDED:
        if fall_back_to_free and subscription.tier != SubscriptionTier.FREE:
            subscription_start_free(user=subscription.user)
        else:
            # No live subscription now; a replacement, if one follows, pushes its own.
            credits_tier_push(user=subscription.user)
    return subscription


# Credits of a period


def credit_period(subscription: Subscription, at: datetime) -> tuple[datetime, datetime]:
    """The stretch of time one allocation of credits covers: the billing period, or for a period
    longer than a month (an annual plan, or one a coupon extended) the month of it that contains `at`."""
    start, end = subscription.current_period_start, subscription.current_period_end
    if end - start <= LONGEST_MONTH:
        return start, end
    month = 0
    while add_months(start, month + 1) <= at and add_months(start, month + 1) < end:
        month += 1
    return add_months(start, month), min(add_months(start, month + 1), end)


def period_credits_allocate(*, subscription: Subscription, at: datetime | None = None) -> bool:
    """Grants the tier's credits for the credit period containing `at`, once (the allocation is
    unique per subscription, period start and source). True when it granted now. A subscription
    Stripe paused gets none: its service is paused (its resumption allocates the period it is in)."""
    at = at or timezone.now()
    if subscription.status not in ALLOCATED or subscription.paused_at or not subscription.monthly_credit_allocation:
        return False
    start, end = credit_period(subscription, at)
    result = credit_grant(
        user=subscription.user,
        amount=subscription.monthly_credit_allocation,
        source=CreditSource.SUBSCRIPTION,
        subscription_id=subscription.pk,
        period_start=start,
        period_end=end,
        expires_at=end,
        reason=f"{SubscriptionTier(subscription.tier).label} credits for the period from {start:%Y-%m-%d}",
    )
    return result.created


# Starting


@dataclass(frozen=True)
class StartResult:
    """`subscription` is set when it exists now (a trial, or an offline checkout that completed);
    otherwise the customer pays at `checkout.url` and the webhook creates it."""

    subscription: Subscription | None
    checkout: Checkout | None


def _subscribable_config(tier: str) -> TierConfig:
    if tier in NOT_SUBSCRIBABLE:
        raise RuleViolation(
            f"The {tier} tier is not sold as a subscription.",
            code=ErrorCode.TIER_NOT_SUBSCRIBABLE,
            extra={"errors": {"tier": ["Choose a paid subscription tier."]}},
        )
    return tier_config_get(tier)


@transaction.atomic
def subscription_start_free(*, user) -> Subscription:
    """Puts a user on the free tier and allocates its credits for the first period."""
    config = tier_config_get(SubscriptionTier.FREE)
    now = timezone.now()
    subscription = Subscription.objects.create(
        user=user,
        tier=SubscriptionTier.FREE,
        billing_cycle=BillingCycle.MONTHLY,
        status=Status.ACTIVE,
        base_price_usd=config.monthly_price_usd,
        monthly_credit_allocation=config.monthly_credit_allocation,
        current_period_start=now,
        current_period_end=period_end(now, BillingCycle.MONTHLY),
    )
    period_credits_allocate(subscription=subscription, at=now)
    entitlement_activate(user=user, tier=SubscriptionTier.FREE)
    return subscription


def _replace_free(live: Subscription | None, *, by_tier: str) -> None:
    if live is not None and live.tier == SubscriptionTier.FREE:
        subscription_transition(
            subscription=live, status=Status.CANCELLED, reason=f"Replaced by {by_tier}", fall_back_to_free=False
        )


def _had_trial(user) -> bool:
    return Subscription.objects.filter(user=user, trial_ends_at__isnull=False).exists()


def subscription_start(
    *,
    user,
    tier: str,
    billing_cycle: str = BillingCycle.MONTHLY,
    coupon_code: str = "",
    client: ClientInfo | None = None,
) -> StartResult:
    """Starts `tier` for a user on the free tier: a trial when the tier has trial days and the user
    never had one, else a checkout. A user in a trial of `tier` starts the checkout that ends it.

    A coupon (a price discount) takes its amount off the checkout's first period; the coupon is held
    for the checkout and counts as redeemed when it is paid. A refused coupon refuses the start with
    the coupon's reason, and nothing is written. The checkout is recorded before Stripe is asked for
    its session, so a retry of the same start (same tier, cycle and coupon) gets the same session.
    """
    started = _start_open(user=user, tier=tier, billing_cycle=billing_cycle, coupon_code=coupon_code, client=client)
    if isinstance(started, Subscription):
        return StartResult(subscription=started, checkout=None)
    checkout = checkout_run(operation=started)
    subscription = (
        Subscription.objects.filter(checkout_session_id=checkout.session_id).first() if checkout.completed else None
    )
    return StartResult(subscription=subscription, checkout=checkout)


@transaction.atomic
def _start_open(*, user, tier, billing_cycle, coupon_code, client) -> Subscription | PaymentOperation:
    """The trial it starts, or the checkout operation to run (a retry's unfinished one)."""
    config = _subscribable_config(tier)
    live = live_subscription_lock(user.pk)
    converting_trial = live is not None and live.status == Status.TRIAL and live.tier == tier
    if live is not None and live.tier != SubscriptionTier.FREE and not converting_trial:
        raise Conflict(
            "There is already a subscription; change its tier instead.",
            code=ErrorCode.SUBSCRIPTION_EXISTS,
            extra={"subscription_id": str(live.pk)},
        )
    if config.trial_days and not converting_trial and not _had_trial(user):
        if settings.FREE_OFFERS_REQUIRE_VERIFIED_EMAIL and not email_is_verified(user=user):
            raise RuleViolation("Verify your e-mail address to start a free trial.", code=ErrorCode.EMAIL_NOT_VERIFIED)
        if coupon_code:
            raise RuleViolation(
                "This start is a free trial, with nothing to pay: apply the coupon when the trial converts.",
                code=ErrorCode.COUPON_NOT_FOR_TRIAL,
            )
        return _trial_start(user=user, config=config, live=live)

    request = {"tier": tier, "billing_cycle": billing_cycle, "coupon_code": coupon_code.upper()}
    unfinished = operation_unfinished_for(kind=OperationKind.SUBSCRIPTION_CHECKOUT, subject=user)
    if unfinished is not None and unfinished.params.get("request") == request:
        return unfinished
    price = config.price_for(billing_cycle)
    metadata = {"tier": tier, "billing_cycle": billing_cycle}
    discount_usd = Decimal("0.00")
    if coupon_code:
        discount = discounts.checkout_discount_apply(
            user=user,
            code=coupon_code,
            tier=tier,
            billing_cycle=billing_cycle,
            amount_usd=price,
            client=client or ClientInfo(),
        )
        metadata |= {"coupon_redemption_id": discount.redemption_id, "coupon_code": discount.coupon_code}
        discount_usd = discount.discount_usd
    operation = checkout_open(
        kind=OperationKind.SUBSCRIPTION_CHECKOUT,
        user=user,
        subject=user,
        amount_usd=price,
        discount_usd=discount_usd,
        coupon_name=f"Coupon {metadata.get('coupon_code', '')}",
        description=f"{config.display_name} ({BillingCycle(billing_cycle).label})",
        metadata=metadata,
        plan_code=tier,
        interval=RECURRING_INTERVALS[billing_cycle],
        success_url=settings.SUBSCRIPTION_CHECKOUT_SUCCESS_URL or None,
        cancel_url=settings.SUBSCRIPTION_CHECKOUT_CANCEL_URL or None,
    )
    operation.params = {**operation.params, "request": request}
    operation.save(update_fields=["params", "updated_at"])
    return operation


def _trial_start(*, user, config: TierConfig, live: Subscription | None) -> Subscription:
    _replace_free(live, by_tier=config.tier)
    now = timezone.now()
    trial_ends_at = now + timedelta(days=config.trial_days)
    subscription = Subscription.objects.create(
        user=user,
        tier=config.tier,
        billing_cycle=BillingCycle.MONTHLY,
        status=Status.TRIAL,
        base_price_usd=config.monthly_price_usd,
        monthly_credit_allocation=config.monthly_credit_allocation,
        current_period_start=now,
        current_period_end=trial_ends_at,
        trial_ends_at=trial_ends_at,
    )
    period_credits_allocate(subscription=subscription, at=now)
    entitlement_activate(user=user, tier=config.tier, expires_at=trial_ends_at)
    _audit(AuditAction.CREATE, subscription, actor=user, reason="Trial started")
    return subscription


def _metadata_choice(metadata: dict, key: str, choices) -> str:
    value = metadata.get(key)
    if value not in choices.values:
        raise EffectNotApplicable(f"The checkout's {key} '{value}' is not valid.")
    return value


def _paid_subscription_begin(*, user, stripe_fields: dict, reason: str, paid_by: str) -> Subscription:
    """The user's paid subscription begins (active, its entitlements): it ends their trial of the
    same tier, or replaces their free plan. Raises EffectNotApplicable, writing nothing, when they
    already have another paid subscription."""
    tier = stripe_fields["tier"]
    live = live_subscription_lock(user.pk)
    if live is not None and live.status == Status.TRIAL and live.tier == tier:
        previous = snapshot(live)
        for field, value in stripe_fields.items():
            setattr(live, field, value)
        return subscription_transition(subscription=live, status=Status.ACTIVE, reason="Trial paid", previous=previous)
    if live is None or live.tier == SubscriptionTier.FREE:
        _replace_free(live, by_tier=tier)
        subscription = Subscription.objects.create(user=user, status=Status.ACTIVE, **stripe_fields)
        _audit(AuditAction.CREATE, subscription, actor=user, reason=reason)
        entitlement_activate(user=user, tier=tier)
        return subscription
    raise EffectNotApplicable(f"{paid_by} paid for {tier}, but the user already has a {live.tier} subscription.")


def stripe_subscription_adopt(
    *,
    user,
    tier: str,
    billing_cycle: str,
    stripe_subscription_id: str,
    stripe_customer_id: str,
    period_start: datetime,
    period_end_at: datetime,
) -> Subscription:
    """A subscription created on Stripe's side (the dashboard, the API) for a customer of ours begins
    here as a paid checkout's does (its trial ended or free plan replaced, entitlements, the period's
    credits), with Stripe's period. Its first invoice's payment is recorded by that invoice's event.
    Raises EffectNotApplicable when the user already has another paid subscription."""
    config = tier_config_get(tier)
    subscription = _paid_subscription_begin(
        user=user,
        stripe_fields={
            "stripe_customer_id": stripe_customer_id or None,
            "stripe_subscription_id": stripe_subscription_id,
            "tier": tier,
            "billing_cycle": billing_cycle,
            "base_price_usd": config.price_for(billing_cycle),
            "monthly_credit_allocation": config.monthly_credit_allocation,
            "current_period_start": period_start,
            "current_period_end": period_end_at,
        },
        reason="Created on Stripe's side",
        paid_by=f"Stripe subscription {stripe_subscription_id}",
    )
    period_credits_allocate(subscription=subscription, at=timezone.now())
    return subscription


def subscription_checkout_succeeded(*, operation: PaymentOperation, facts: dict) -> dict:
    """The effect of a paid subscription checkout (offline at once, or checkout.session.completed):
    activates the paid subscription for a new period, records the invoice and payment, allocates the
    period's credits and the tier's entitlements. Runs once per operation, in its settling transaction."""
    metadata = operation.params.get("metadata", {})
    session_id = facts.get("session_id") or operation.stripe_checkout_session_id
    done = Subscription.objects.filter(checkout_session_id=session_id).first()
    if done is not None:
        return {"object_id": str(done.pk)}
    user = get_user_model().objects.filter(pk=operation.user_id).first()
    if user is None:
        raise EffectNotApplicable(f"The checkout's user {operation.user_id} no longer exists.")
    tier = _metadata_choice(metadata, "tier", SubscriptionTier)
    billing_cycle = _metadata_choice(metadata, "billing_cycle", BillingCycle)
    config = tier_config_get(tier)
    now = timezone.now()
    stripe_fields = {
        "checkout_session_id": session_id,
        "stripe_customer_id": facts.get("customer_id") or operation.stripe_customer_id or None,
        "stripe_subscription_id": facts.get("subscription_id") or None,
        "tier": tier,
        "billing_cycle": billing_cycle,
        "base_price_usd": config.price_for(billing_cycle),
        "monthly_credit_allocation": config.monthly_credit_allocation,
        "current_period_start": now,
        "current_period_end": period_end(now, billing_cycle),
    }
    subscription = _paid_subscription_begin(
        user=user, stripe_fields=stripe_fields, reason="Checkout paid", paid_by=f"Checkout {session_id}"
    )
    discount_usd = Decimal("0.00")
    currency = facts.get("currency") or operation.currency
    if metadata.get("coupon_redemption_id"):
        discount_usd = discounts.checkout_discount_confirm(
            redemption_id=metadata["coupon_redemption_id"], subscription=subscription, currency=currency
        )
    invoice_paid_record(
        subscription=subscription,
        amount=facts.get("amount", operation.amount),
        currency=currency,
        discount=major_to_minor(discount_usd, currency),
        period_start=subscription.current_period_start,
        period_end_at=subscription.current_period_end,
        description=f"{config.display_name}, first period",
        stripe_invoice_id=facts.get("invoice_id") or None,
        stripe_payment_intent_id=facts.get("payment_intent_id") or None,
    )
    period_credits_allocate(subscription=subscription, at=now)
    return {"object_id": str(subscription.pk)}


def subscription_checkout_failed(*, operation: PaymentOperation) -> None:
    """A checkout never paid gives back the coupon it held."""
    redemption_id = operation.params.get("metadata", {}).get("coupon_redemption_id")
    if redemption_id:
        discounts.checkout_discount_release(redemption_id=redemption_id)


# Changes Stripe's subscription must mirror


def stripe_subscription_sync(
    *, subscription: Subscription, action: str, reason: str, amount_usd: Decimal = Decimal("0.00"), **params
) -> PaymentOperation | None:
    """Records, in the caller's transaction, a change the subscription's Stripe subscription must
    mirror, and sends it once that transaction commits (never inside it). A provider failure leaves
    the operation for `reconcile_payments` to retry; the local change stands."""
    if not subscription.stripe_subscription_id or not stripe_active():
        return None
    operation = operation_open(
        kind=OperationKind.SUBSCRIPTION_SYNC,
        user=subscription.user,
        subject=subscription,
        amount_usd=amount_usd,
        description=reason,
        params={"action": action, "stripe_subscription_id": subscription.stripe_subscription_id, **params},
    )
    operation_after_commit(operation)
    return operation


def stripe_subscription_synced(*, operation: PaymentOperation, facts: dict) -> dict:
    return {"action": operation.params.get("action"), "object_id": operation.subject_id}


# Renewal


def subscription_extend(*, subscription: Subscription, months: int, reason: str) -> None:
    """Free time (a coupon): the current period of a locked subscription, and a trial's end, move
    `months` later; Stripe bills it next at the new end. The credit periods follow (`credit_period`)."""
    previous = snapshot(subscription)
    new_end = add_months(subscription.current_period_end, months)
    stripe_subscription_sync(
        subscription=subscription, action="bill_next_at", reason=reason, timestamp=int(new_end.timestamp())
    )
    subscription.current_period_end = new_end
    if subscription.status == Status.TRIAL:
        subscription.trial_ends_at = new_end
        entitlement_activate(user=subscription.user, tier=subscription.tier, expires_at=new_end)
    subscription.save(update_fields=["current_period_end", "trial_ends_at", "updated_at"])
    _audit(AuditAction.UPDATE, subscription, previous=previous, reason=reason)


def subscription_renewal_discount_set(*, subscription: Subscription, discount_usd: Decimal, reason: str) -> None:
    """A discount on the next renewal of a locked subscription (a coupon): taken off the offline
    renewal charge, or put on the next Stripe invoice. Cleared when the subscription renews."""
    previous = snapshot(subscription)
    stripe_subscription_sync(
        subscription=subscription, action="discount_once", reason=reason, amount_usd=discount_usd, name=reason
    )
    subscription.renewal_discount_usd = discount_usd
    subscription.save(update_fields=["renewal_discount_usd", "updated_at"])
    _audit(AuditAction.UPDATE, subscription, previous=previous, reason=reason)


# What a renewal changes on the subscription.
RENEWED_FIELDS = (
    "tier",
    "base_price_usd",
    "monthly_credit_allocation",
    "scheduled_tier",
    "current_period_start",
    "current_period_end",
    "renewal_discount_usd",
)


def subscription_renew(*, subscription: Subscription, new_start: datetime, new_end: datetime) -> None:
    """Moves a locked subscription into its next period: a downgrade scheduled for the period end
    applies now, then the new period's credits are allocated."""
    previous = snapshot(subscription)
    tier_changed = bool(subscription.scheduled_tier) and subscription.scheduled_tier != subscription.tier
    if subscription.scheduled_tier:
        config = tier_config_get(subscription.scheduled_tier)
        subscription.tier = config.tier
        subscription.base_price_usd = config.price_for(subscription.billing_cycle)
        subscription.monthly_credit_allocation = config.monthly_credit_allocation
        subscription.scheduled_tier = ""
        ProrationEvent.objects.filter(
            subscription=subscription, change_type=ChangeType.DOWNGRADE, status=ProrationStatus.PENDING
        ).update(status=ProrationStatus.APPLIED, updated_at=timezone.now())
    subscription.current_period_start, subscription.current_period_end = new_start, new_end
    subscription.renewal_discount_usd = Decimal("0.00")  # a coupon's discount is for one renewal
    row_update(subscription, [*RENEWED_FIELDS, "updated_at"], ahead=True)
    _audit(AuditAction.UPDATE, subscription, previous=previous, reason="Renewed for a new period")
    if tier_changed:
        entitlement_activate(user=subscription.user, tier=subscription.tier)
    period_credits_allocate(subscription=subscription, at=new_start)


# Tier changes


@dataclass(frozen=True)
class TierChangeQuote:
    change_type: ChangeType
    numbers: proration.Proration
    effective_date: datetime
    new_price_usd: Decimal
    new_credits: int


@dataclass(frozen=True)
class TierChange:
    """A tier change and, for an upgrade with something to pay, the payment behind it: the change is
    applied once that payment succeeded (`event.status` applied), or waits for it (pending)."""

    event: ProrationEvent
    payment: PaymentOperation | None = None


def _tier_change_quote(subscription: Subscription, tier: str, at: datetime) -> TierChangeQuote:
    if subscription.status != Status.ACTIVE:
        raise Conflict(
            f"Only an active subscription can change tier; this one is {subscription.status}.",
            code=ErrorCode.SUBSCRIPTION_NOT_ACTIVE,
        )
    if subscription.tier == SubscriptionTier.FREE:
        raise RuleViolation(
            "A free subscription moves to a paid tier through POST subscriptions/ (trial or checkout).",
            code=ErrorCode.START_A_SUBSCRIPTION,
        )
    if tier == subscription.tier:
        raise RuleViolation("The subscription is already on this tier.", code=ErrorCode.SAME_TIER)
    return _tier_change_numbers(subscription, _subscribable_config(tier), at)


def _tier_change_numbers(subscription: Subscription, config: TierConfig, at: datetime) -> TierChangeQuote:
    """The proration of moving the subscription to `config`'s tier at `at` (SPEC: an upgrade now,
    prorated; a downgrade at the period end), in its billing cycle."""
    new_price = config.price_for(subscription.billing_cycle)
    if new_price > subscription.base_price_usd:
        credit_start, credit_end = credit_period(subscription, at)
        numbers = proration.upgrade(
            old_price_usd=subscription.base_price_usd,
            new_price_usd=new_price,
            old_credits=subscription.monthly_credit_allocation,
            new_credits=config.monthly_credit_allocation,
            period_start=subscription.current_period_start,
            period_end=subscription.current_period_end,
            at=at,
            credit_fraction_left=proration.fraction_left(period_start=credit_start, period_end=credit_end, at=at),
        )
        return TierChangeQuote(ChangeType.UPGRADE, numbers, at, new_price, config.monthly_credit_allocation)
    numbers = proration.downgrade(
        period_start=subscription.current_period_start, period_end=subscription.current_period_end, at=at
    )
    return TierChangeQuote(
        ChangeType.DOWNGRADE, numbers, subscription.current_period_end, new_price, config.monthly_credit_allocation
    )


def _acts_as_staff(user) -> bool:
    """Staff act on anyone's subscription, and cancel at once, only with the permission to change
    subscriptions (and the second factor staff need): otherwise they are customers here."""
    return acts_as_staff(user, permissions=(STAFF_CHANGE_PERMISSION,))


def _owned_subscription(subscription: Subscription, user) -> Subscription:
    if subscription.user_id != user.pk and not _acts_as_staff(user):
        raise NotFound("No such subscription.", code=ErrorCode.SUBSCRIPTION_NOT_FOUND)
    return subscription


@transaction.atomic
def tier_change_preview(*, subscription_id, user, tier: str) -> TierChangeQuote:
    """The numbers of a tier change, as `change-tier` would apply them now. Writes nothing."""
    subscription = _owned_subscription(subscription_lock(subscription_id), user)
    return _tier_change_quote(subscription, tier, timezone.now())


def tier_change(*, subscription_id, user, tier: str) -> TierChange:
    """Upgrades apply now: the net charge is collected first (its payment recorded before Stripe is
    asked), then the tier, the prorated difference of credits and the entitlements switch, once.
    Downgrades are scheduled for the period end. Either way the ProrationEvent records the numbers
    and the change is audited. A retry while the payment is unfinished resumes that payment.

    Raises PaymentDeclined (402, nothing applied), ProviderUnavailable (503, the payment resumes on
    retry) or ProviderError (502)."""
    change = _tier_change_open(subscription_id=subscription_id, user=user, tier=tier)
    if change.payment is None:
        return change
    payment = operation_run(operation_id=change.payment.pk)
    change.event.refresh_from_db()
    return TierChange(event=change.event, payment=payment)


@transaction.atomic
def _tier_change_open(*, subscription_id, user, tier: str) -> TierChange:
    subscription = _owned_subscription(subscription_lock(subscription_id), user)
    unfinished = operation_unfinished_for(kind=OperationKind.UPGRADE_CHARGE, subject=subscription)
    if unfinished is not None:
        event = ProrationEvent.objects.get(pk=unfinished.params["proration_event_id"])
        if event.to_tier != tier:
            raise Conflict(
                f"The payment of the change to {event.to_tier} is still in progress.",
                code=ErrorCode.PAYMENT_IN_PROGRESS,
                extra={"operation_id": str(unfinished.pk), "to_tier": event.to_tier},
            )
        return TierChange(event=event, payment=unfinished)
    now = timezone.now()
    quote = _tier_change_quote(subscription, tier, now)
    numbers = quote.numbers
    charge_needed = quote.change_type == ChangeType.UPGRADE and numbers.net_charge_usd > 0
    customer_id = customer_to_charge(user_id=subscription.user_id, subscription=subscription)
    if charge_needed and stripe_active() and not customer_id:
        raise PaymentRequired(
            "There is no card on file for this subscription; start a checkout first.",
            code=ErrorCode.PAYMENT_METHOD_REQUIRED,
        )
    previous = snapshot(subscription)
    # A new change replaces a downgrade still waiting for the period end: that one never applies.
    ProrationEvent.objects.filter(subscription=subscription, status=ProrationStatus.PENDING).update(
        status=ProrationStatus.REVERSED, updated_at=now
    )
    event = ProrationEvent.objects.create(
        user=subscription.user,
        subscription=subscription,
        from_tier=subscription.tier,
        to_tier=tier,
        change_type=quote.change_type,
        days_remaining=numbers.days_remaining,
        days_in_cycle=numbers.days_in_cycle,
        unused_credit_value_usd=numbers.unused_credit_value_usd,
        new_tier_prorated_cost_usd=numbers.new_tier_prorated_cost_usd,
        net_charge_usd=numbers.net_charge_usd,
        credits_adjustment=numbers.credits_adjustment,
        effective_date=quote.effective_date,
        status=ProrationStatus.PENDING,
    )
    payment = None
    if charge_needed:
        payment = operation_open(
            kind=OperationKind.UPGRADE_CHARGE,
            user=subscription.user,
            subject=subscription,
            amount_usd=numbers.net_charge_usd,
            description=f"Upgrade to {SubscriptionTier(tier).label}, prorated",
            natural_key=f"upgrade_charge:{event.pk}",
            stripe_customer_id=customer_id,
            params={
                "proration_event_id": str(event.pk),
                "actor_id": user.pk,
                "plan_code": tier,
                "metadata": {"subscription_id": str(subscription.pk), "proration_event_id": str(event.pk)},
            },
        )
    elif quote.change_type == ChangeType.UPGRADE:
        _upgrade_apply(subscription, event)
    else:
        subscription.scheduled_tier = tier
        subscription.save(update_fields=["scheduled_tier", "updated_at"])
        _reprice_sync(subscription, tier=tier)
    _audit(
        AuditAction.UPDATE,
        subscription,
        previous=previous,
        actor=user,
        reason=f"Tier change to {tier} ({quote.change_type})" + (", payment pending" if payment else ""),
        proration_event_id=str(event.pk),
    )
    return TierChange(event=event, payment=payment)


def _reprice_sync(subscription: Subscription, *, tier: str) -> None:
    """Stripe bills the new tier's price from the next invoice on; the change in this period was
    charged on its own, so Stripe is told not to prorate."""
    config = tier_config_get(tier)
    stripe_subscription_sync(
        subscription=subscription,
        action="reprice",
        reason=f"Bill {tier} from the next period",
        unit_amount=usd_to_cents(config.price_for(subscription.billing_cycle)),
        interval=RECURRING_INTERVALS[subscription.billing_cycle],
        metadata={"tier": tier, "billing_cycle": subscription.billing_cycle},
    )


def _upgrade_apply(subscription: Subscription, event: ProrationEvent, *, facts: dict | None = None) -> None:
    """Switches a locked subscription to the event's tier now: the paid invoice of the net charge,
    the tier and its price, the prorated credits, the entitlements."""
    now = timezone.now()
    config = tier_config_get(event.to_tier)
    if event.net_charge_usd > 0:
        invoice_paid_record(
            subscription=subscription,
            amount=usd_to_cents(event.net_charge_usd),
            period_start=min(now, subscription.current_period_end - timedelta(seconds=1)),
            period_end_at=subscription.current_period_end,
            description=f"Upgrade {event.from_tier} -> {event.to_tier}, prorated",
            stripe_invoice_id=(facts or {}).get("invoice_id") or None,
            stripe_payment_intent_id=(facts or {}).get("payment_intent_id") or None,
        )
    subscription.tier = event.to_tier
    subscription.base_price_usd = config.price_for(subscription.billing_cycle)
    subscription.monthly_credit_allocation = config.monthly_credit_allocation
    subscription.scheduled_tier = ""
    subscription.save()
    if event.credits_adjustment > 0:
        _upgrade_credits_grant(
            subscription,
            event.credits_adjustment,
            at=now,
            reason=f"Upgrade {event.from_tier} -> {event.to_tier}, prorated",
        )
    entitlement_activate(user=subscription.user, tier=subscription.tier)
    event.status = ProrationStatus.APPLIED
    event.save(update_fields=["status", "updated_at"])
    _reprice_sync(subscription, tier=event.to_tier)


def stripe_tier_change(*, subscription: Subscription, tier: str, billing_cycle: str, at: datetime) -> str:
    """A price changed on Stripe's side (its dashboard, the portal) for a locked subscription, under
    the project's own tier change rules (SPEC: upgrades now, prorated; downgrades at the period end),
    as of `at` (when Stripe made it). Returns what was done: "upgrade", "downgrade" or "switched".

    - An upgrade applies now: the tier, its price and entitlements, and the prorated difference of
      credits (`proration.upgrade`, as `tier_change` computes it), granted once (its allocation is
      keyed by the subscription and `at`). Stripe collects its own proration of the price on its
      invoice, so nothing is charged here: the ProrationEvent records the numbers, net charge 0.
    - A downgrade is scheduled for the period end (`scheduled_tier`, a pending ProrationEvent): the
      tier and its credits stay until then, and the renewal applies it.
    - A change of billing cycle starts a new billing on Stripe's side: the tier and cycle switch now,
      nothing is prorated (the next invoice starts the new period)."""
    config = tier_config_get(tier)
    if billing_cycle != subscription.billing_cycle or tier == subscription.tier:
        _stripe_price_set(subscription, config, billing_cycle)
        return "switched"
    quote = _tier_change_numbers(subscription, config, at)
    upgrade, numbers = quote.change_type == ChangeType.UPGRADE, quote.numbers
    # A change on Stripe's side replaces a downgrade still waiting for the period end, as ours does.
    ProrationEvent.objects.filter(subscription=subscription, status=ProrationStatus.PENDING).update(
        status=ProrationStatus.REVERSED, updated_at=timezone.now()
    )
    event = ProrationEvent.objects.create(
        user=subscription.user,
        subscription=subscription,
        from_tier=subscription.tier,
        to_tier=tier,
        change_type=ChangeType.UPGRADE if upgrade else ChangeType.DOWNGRADE,
        days_remaining=numbers.days_remaining,
        days_in_cycle=numbers.days_in_cycle,
        unused_credit_value_usd=numbers.unused_credit_value_usd,
        new_tier_prorated_cost_usd=numbers.new_tier_prorated_cost_usd,
        net_charge_usd=Decimal("0.00"),
        credits_adjustment=numbers.credits_adjustment,
        effective_date=quote.effective_date,
        status=ProrationStatus.APPLIED if upgrade else ProrationStatus.PENDING,
    )
    if not upgrade:
        subscription.scheduled_tier = tier
        return "downgrade"
    from_tier = subscription.tier
    _stripe_price_set(subscription, config, billing_cycle)
    if event.credits_adjustment > 0 and subscription.status == Status.ACTIVE and not subscription.paused_at:
        _upgrade_credits_grant(
            subscription,
            event.credits_adjustment,
            at=at,
            reason=f"Upgrade {from_tier} -> {tier} on Stripe's side, prorated",
        )
    return "upgrade"


def _upgrade_credits_grant(subscription: Subscription, amount: int, *, at: datetime, reason: str) -> None:
    """An upgrade's prorated credits, from `at` to the end of the credit period it falls in."""
    _, credit_end = credit_period(subscription, at)
    credit_grant(
        user=subscription.user,
        amount=amount,
        source=CreditSource.PRORATION,
        subscription_id=subscription.pk,
        period_start=at,
        period_end=credit_end,
        expires_at=credit_end,
        reason=reason,
    )


def stripe_downgrade_withdraw(*, subscription: Subscription, at: datetime) -> str:
    """Stripe bills the current tier again at `at` while a downgrade waits for the period end (the
    price was lowered and raised back on Stripe's side): the downgrade is withdrawn, as the customer
    keeps paying for the tier they have. Only a downgrade scheduled before `at` is: ours reprices
    Stripe after commit, so an event made before it still shows the old price. Returns "withdrawn"
    or ""."""
    if not subscription.scheduled_tier:
        return ""
    withdrawn = ProrationEvent.objects.filter(
        subscription=subscription, status=ProrationStatus.PENDING, created_at__lt=at
    ).update(status=ProrationStatus.REVERSED, updated_at=timezone.now())
    if not withdrawn:
        return ""
    subscription.scheduled_tier = ""
    return "withdrawn"


def _stripe_price_set(subscription: Subscription, config: TierConfig, billing_cycle: str) -> None:
    """The tier and cycle Stripe now bills, from now on (saved by the caller), with its entitlements."""
    subscription.tier, subscription.billing_cycle, subscription.scheduled_tier = config.tier, billing_cycle, ""
    subscription.base_price_usd = config.price_for(billing_cycle)
    subscription.monthly_credit_allocation = config.monthly_credit_allocation
    if subscription.status == Status.ACTIVE and not subscription.paused_at:
        entitlement_activate(user=subscription.user, tier=config.tier)


def upgrade_charge_succeeded(*, operation: PaymentOperation, facts: dict) -> dict:
    """The effect of a paid upgrade charge: the change applies now, once."""
    subscription = subscription_lock(operation.subject_id)
    event = ProrationEvent.objects.select_for_update().get(pk=operation.params["proration_event_id"])
    if (
        event.status != ProrationStatus.PENDING
        or subscription.status != Status.ACTIVE
        or subscription.tier != event.from_tier
    ):
        raise EffectNotApplicable(
            f"The change to {event.to_tier} no longer applies (change {event.status}, "
            f"subscription {subscription.status} on {subscription.tier})."
        )
    previous = snapshot(subscription)
    _upgrade_apply(subscription, event, facts=facts)
    _audit(
        AuditAction.UPDATE,
        subscription,
        previous=previous,
        actor=get_user_model().objects.filter(pk=operation.params.get("actor_id")).first(),
        reason=f"Upgrade to {event.to_tier} paid",
        proration_event_id=str(event.pk),
        operation_id=str(operation.pk),
    )
    return {"object_id": str(event.pk), "subscription_id": str(subscription.pk), "tier": subscription.tier}


def upgrade_revert(*, subscription: Subscription, event: ProrationEvent, reason: str) -> int:
    """Undoes an applied upgrade of a locked subscription still on its tier, in the period it was
    made (its prorated charge was refunded in full): the tier, its price and entitlements go back,
    the upgrade's prorated credits are clawed back through the credits door (what is spent or held
    stays), the change is `reversed` and Stripe bills the earlier tier from the next invoice. Returns
    the credits clawed back."""
    previous = snapshot(subscription)
    config = tier_config_get(event.from_tier)
    subscription.tier = event.from_tier
    subscription.base_price_usd = config.price_for(subscription.billing_cycle)
    subscription.monthly_credit_allocation = config.monthly_credit_allocation
    subscription.save()
    # The upgrade's grant: the first prorated allocation of the subscription since the change was quoted.
    allocation = (
        CreditAllocation.objects.filter(
            subscription_id=subscription.pk,
            source=CreditSource.PRORATION,
            period_start__gte=event.effective_date,
            amount=event.credits_adjustment,
        )
        .order_by("period_start")
        .first()
    )
    clawed_back = 0
    if allocation is not None:
        clawed_back = allocations_claw_back(
            user_id=subscription.user_id, allocation_ids=[allocation.pk], reason=reason, subscription=subscription
        )
    entitlement_activate(user=subscription.user, tier=subscription.tier)
    event.status = ProrationStatus.REVERSED
    event.save(update_fields=["status", "updated_at"])
    _reprice_sync(subscription, tier=event.from_tier)
    _audit(
        AuditAction.UPDATE,
        subscription,
        previous=previous,
        actor=None,
        reason=reason,
        proration_event_id=str(event.pk),
        credits_clawed_back=clawed_back,
    )
    return clawed_back


def upgrade_charge_failed(*, operation: PaymentOperation) -> None:
    """An upgrade whose charge failed never applies."""
    ProrationEvent.objects.filter(pk=operation.params["proration_event_id"], status=ProrationStatus.PENDING).update(
        status=ProrationStatus.FAILED, updated_at=timezone.now()
    )


# Cancellation and staff changes


@transaction.atomic
def subscription_cancel(*, subscription_id, user, immediately: bool = False, reason: str = "") -> Subscription:
    """Customers cancel at the period end (a trial at its end); staff may cancel now, which puts the
    user back on the free tier at once."""
    subscription = _owned_subscription(subscription_lock(subscription_id), user)
    if subscription.status not in LIVE_STATUSES:
        raise Conflict(f"The subscription is already {subscription.status}.", code=ErrorCode.SUBSCRIPTION_NOT_LIVE)
    if subscription.tier == SubscriptionTier.FREE:
        raise RuleViolation("The free tier cannot be cancelled.", code=ErrorCode.FREE_TIER_NOT_CANCELLABLE)
    if immediately:
        if not _acts_as_staff(user):
            raise RuleViolation("Only staff cancel a subscription at once.", code=ErrorCode.IMMEDIATE_CANCEL_STAFF_ONLY)
        stripe_subscription_sync(subscription=subscription, action="cancel_now", reason=reason or "Cancelled by staff")
        return subscription_transition(
            subscription=subscription, status=Status.CANCELLED, reason=reason or "Cancelled by staff", actor=user
        )
    if subscription.cancel_at_period_end:
        return subscription
    previous = snapshot(subscription)
    subscription.cancel_at_period_end = True
    subscription.save(update_fields=["cancel_at_period_end", "updated_at"])
    stripe_subscription_sync(
        subscription=subscription, action="cancel_at_period_end", reason=reason or "Cancel at period end"
    )
    _audit(AuditAction.UPDATE, subscription, previous=previous, actor=user, reason=reason or "Cancel at period end")
    return subscription


@transaction.atomic
def subscription_status_change(*, subscription_id, status: str, reason: str, actor) -> Subscription:
    """Staff move a subscription along the state machine, with a reason (console and API)."""
    if not reason.strip():
        raise RuleViolation("A status change needs a reason.", code=ErrorCode.REASON_REQUIRED)
    subscription = subscription_lock(subscription_id)
    subscription = subscription_transition(subscription=subscription, status=status, reason=reason, actor=actor)
    if status in ENDED:
        # An ended subscription must not go on being billed: Stripe's is cancelled once this commits.
        stripe_subscription_sync(subscription=subscription, action="cancel_now", reason=reason)
    return subscription
