"""Writes of the coupons app: redemption with its effect, coupons held by a checkout, fraud
detections and their resolution, staff management of coupons and campaigns, analytics snapshots.

Redemption locks, in this order, the user's live subscription, the coupon row and its campaign row,
then (through the effect) the credit balance or the new license; subscription start takes the same
order. Under the coupon's lock the usage limits are counted exactly, and each redemption takes the
next use number, which unique constraints back up. A refused redemption is recorded as `failed`,
with its reason and fraud detections, in its own transaction, for fraud analysis.
"""

import logging
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, Max, OuterRef, Q, Sum
from django.db.models.functions import Upper
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_model_change, audit_record, resource_type_of, snapshot
from billing_project.errors import Conflict, NotFound, RuleViolation
from billing_project.metrics import COUPON_REDEMPTIONS
from billing_project.net import ClientInfo
from billing_project.transactions import conflict_retrying
from coupons import selectors
from coupons.codes import ErrorCode, Reason
from coupons.models import (
    PRICE_DISCOUNTS,
    CampaignCoupon,
    Coupon,
    CouponAnalyticsSnapshot,
    CouponCampaign,
    CouponCodeGuess,
    CouponFraudDetection,
    CouponRedemption,
    CouponUsageLimit,
    DiscountType,
    FraudDetectionType,
    FraudSeverity,
    GuessChannel,
    RedemptionStatus,
)
from coupons.selectors import TAKES_A_USE, FraudSignal, Preview, Purchase, Validation, Verdict
from credits.models import CreditSource
from credits.services import credit_grant
from licensing.services import license_grant_by_coupon
from subscriptions.discounts import CheckoutDiscount
from subscriptions.models import PaymentStatus, PaymentTransaction
from subscriptions.services import live_subscription_lock, subscription_extend, subscription_renewal_discount_set

logger = logging.getLogger(__name__)

REASON_TEXT = {
    Reason.COUPON_NOT_FOUND: "There is no coupon with this code.",
    Reason.COUPON_DELETED: "This coupon was withdrawn.",
    Reason.COUPON_INACTIVE: "This coupon is not active.",
    Reason.COUPON_NOT_YET_VALID: "This coupon is not valid yet.",
    Reason.COUPON_EXPIRED: "This coupon has expired.",
    Reason.CAMPAIGN_INACTIVE: "This coupon's campaign is not active.",
    Reason.CAMPAIGN_NOT_RUNNING: "This coupon's campaign is not running now.",
    Reason.CAMPAIGN_BUDGET_EXHAUSTED: "This coupon's campaign has spent its budget.",
    Reason.MAX_USES_REACHED: "This coupon has been used as many times as it may be.",
    Reason.USER_LIMIT_REACHED: "You have already used this coupon as many times as you may.",
    Reason.TIER_NOT_ELIGIBLE: "This coupon does not apply to this tier.",
    Reason.BILLING_CYCLE_NOT_ELIGIBLE: "This coupon does not apply to this billing cycle.",
    Reason.MINIMUM_PURCHASE_NOT_MET: "The purchase is below this coupon's minimum.",
    Reason.NEW_CUSTOMERS_ONLY: "This coupon is for new customers only.",
    Reason.RULE_FIRST_TIME_USER: "This coupon is for customers who never redeemed one.",
    Reason.EMAIL_NOT_VERIFIED: "This coupon is for verified e-mail addresses: verify yours first.",
    Reason.RULE_EMAIL_DOMAIN: "This coupon is not for this account's e-mail domain.",
    Reason.RULE_MIN_ACCOUNT_AGE: "This account is too new for this coupon.",
    Reason.RULE_MAX_REDEMPTIONS_PER_IP: "This coupon was redeemed too many times from this network.",
    Reason.FRAUD_BLOCKED: "This redemption was refused by our fraud checks; contact support if this is wrong.",
    Reason.NO_SUBSCRIPTION_TO_DISCOUNT: (
        "A discount coupon needs an active paid subscription, or use it when starting one."
    ),
    Reason.DISCOUNT_ALREADY_PENDING: "A discount already waits for your next renewal.",
    Reason.APPLY_AT_SUBSCRIPTION_START: "For another plan, apply this coupon when starting that subscription.",
    Reason.NO_SUBSCRIPTION_TO_EXTEND: "Free months need a paid subscription or trial to extend.",
    Reason.NOT_A_CHECKOUT_DISCOUNT: "This coupon is not a price discount; redeem it on its own.",
}


class CouponRefused(RuleViolation):
    """422 problem whose `code` is the validation reason."""

    def __init__(self, reason: Reason):
        super().__init__(REASON_TEXT[reason], code=str(reason))


@dataclass
class _Refusal(Exception):
    reason: Reason
    coupon: Coupon | None = None
    campaign: CouponCampaign | None = None
    preview: Preview = field(default_factory=Preview)
    signals: list[FraudSignal] = field(default_factory=list)


def _lock_coupon(code: str) -> tuple[Coupon | None, CouponCampaign | None]:
    # FOR NO KEY UPDATE: redemptions still queue on the coupon, but rows that merely reference the
    # coupon or campaign (a refusal being recorded: its foreign keys take FOR KEY SHARE, campaign
    # then coupon) neither wait for nor deadlock with the redemption holding these locks.
    coupon = selectors.coupons_by_code(code).select_for_update(no_key=True).first()
    if coupon is None:
        return None, None
    campaign = (
        CouponCampaign.objects.select_for_update(of=("self",), no_key=True).filter(coupon_links__coupon=coupon).first()
    )
    return coupon, campaign


def _redemption_take(
    *,
    coupon: Coupon,
    campaign: CouponCampaign | None,
    user,
    subscription,
    preview: Preview,
    client: ClientInfo,
    status: RedemptionStatus,
    now: datetime,
) -> CouponRedemption:
    """A redemption holding the coupon's next use, under the coupon's lock; the campaign's spending
    grows by what it costs (its check constraint keeps it within budget)."""
    numbers = coupon.redemptions.filter(status__in=TAKES_A_USE).aggregate(
        last=Max("use_number"), last_of_user=Max("user_use_number", filter=Q(user=user))
    )
    redemption = CouponRedemption.objects.create(
        coupon=coupon,
        coupon_code=coupon.code,
        user=user,
        subscription=subscription,
        campaign=campaign,
        redemption_date=now,
        status=status,
        use_number=(numbers["last"] or 0) + 1,
        user_use_number=(numbers["last_of_user"] or 0) + 1,
        original_amount_usd=preview.original_amount_usd,
        discount_applied_usd=preview.discount_usd,
        final_amount_usd=preview.final_amount_usd,
        credits_granted=preview.credits,
        months_granted=preview.months_free,
        ip_address=client.ip,
        user_agent=client.user_agent,
        device_fingerprint=client.device_fingerprint,
    )
    if campaign is not None and preview.cost_usd:
        campaign.spent_usd += preview.cost_usd
        campaign.save(update_fields=["spent_usd", "updated_at"])
    return redemption


def _usage_count(redemption: CouponRedemption, now: datetime) -> None:
    """The coupon's running totals, kept in step with its successful redemptions."""
    usage, _ = CouponUsageLimit.objects.select_for_update().get_or_create(coupon_id=redemption.coupon_id)
    first_of_user = (
        not CouponRedemption.objects.filter(
            coupon_id=redemption.coupon_id, user_id=redemption.user_id, status=RedemptionStatus.SUCCESS
        )
        .exclude(pk=redemption.pk)
        .exists()
    )
    usage.total_uses += 1
    usage.unique_users += int(first_of_user)
    usage.total_discount_usd += redemption.discount_applied_usd
    usage.last_used_at = now
    usage.save()


def _detections_record(
    signals: list[FraudSignal], *, coupon, user, redemption, client: ClientInfo, now: datetime
) -> None:
    CouponFraudDetection.objects.bulk_create(
        CouponFraudDetection(
            coupon=coupon,
            user=user,
            redemption=redemption,
            detection_type=signal.detection_type,
            severity=signal.severity,
            details=signal.details,
            ip_address=client.ip,
            device_fingerprint=client.device_fingerprint,
            is_flagged=True,
            detected_at=now,
        )
        for signal in signals
    )


def _count(result: str) -> None:
    transaction.on_commit(lambda: COUPON_REDEMPTIONS.labels(result=result).inc())


def _effect_apply(*, coupon: Coupon, redemption: CouponRedemption, user, subscription, preview: Preview, now) -> None:
    label = f"Coupon {coupon.code}"
    if coupon.discount_type == DiscountType.CREDITS:
        grant = credit_grant(user=user, amount=preview.credits, source=CreditSource.COUPON, reason=label)
        redemption.credit_allocation = grant.allocation
    elif coupon.discount_type == DiscountType.MONTHS_FREE:
        subscription_extend(
            subscription=subscription, months=preview.months_free, reason=f"{label}: {preview.months_free} months free"
        )
    elif coupon.discount_type in PRICE_DISCOUNTS:
        subscription_renewal_discount_set(
            subscription=subscription, discount_usd=preview.discount_usd, reason=f"{label}: off the next renewal"
        )
    else:
        redemption.license_granted = license_grant_by_coupon(user=user, coupon_code=coupon.code)
        redemption.license_granted_at = now
    redemption.save()


def _redeem(*, user, code, tier, billing_cycle, amount_usd, client: ClientInfo, now: datetime) -> CouponRedemption:
    subscription = live_subscription_lock(user.pk)
    coupon, campaign = _lock_coupon(code)
    purchase = selectors.purchase_for(
        subscription=subscription, tier=tier, billing_cycle=billing_cycle, amount_usd=amount_usd
    )
    assessment = selectors.coupon_assess(
        coupon=coupon,
        campaign=campaign,
        user=user,
        subscription=subscription,
        purchase=purchase,
        client=client,
        now=now,
    )
    verdict, preview = assessment.verdict, assessment.preview
    if not verdict.valid:
        raise _Refusal(verdict.reason, coupon=coupon, campaign=campaign, preview=preview, signals=verdict.signals)
    touches_subscription = coupon.discount_type in PRICE_DISCOUNTS or coupon.discount_type == DiscountType.MONTHS_FREE
    redemption = _redemption_take(
        coupon=coupon,
        campaign=campaign,
        user=user,
        subscription=subscription if touches_subscription else None,
        preview=preview,
        client=client,
        status=RedemptionStatus.SUCCESS,
        now=now,
    )
    _effect_apply(coupon=coupon, redemption=redemption, user=user, subscription=subscription, preview=preview, now=now)
    _usage_count(redemption, now)
    _detections_record(verdict.signals, coupon=coupon, user=user, redemption=redemption, client=client, now=now)
    _count(RedemptionStatus.SUCCESS)
    return redemption


# Code guessing: unknown codes tried through validate and redeem are counted per user and per IP


def _guess_record(*, user, code: str, client: ClientInfo, channel: GuessChannel, now: datetime) -> None:
    """Records an unknown code, and a fraud detection when the caller's guesses reach the flag
    level (medium) or the block level (high), by their own count or their address's."""
    CouponCodeGuess.objects.create(
        user=user, ip_address=client.ip, code=selectors.code_normalize(code)[:50], channel=channel, tried_at=now
    )
    logger.info(
        "unknown coupon code tried through %s by user %s from %s", channel, user.pk, client.ip or "an unknown address"
    )
    guessing = selectors.code_guessing(user=user, client=client, now=now)
    flag, block = settings.COUPON_GUESSING
    levels = {flag: FraudSeverity.MEDIUM, block: FraudSeverity.HIGH}
    severity = levels.get(guessing.by_user) or (FraudSeverity.HIGH if guessing.from_ip == block else None)
    if severity is not None:
        details = {"unknown_codes_last_hour": guessing.by_user, "unknown_codes_from_ip_last_hour": guessing.from_ip}
        signal = FraudSignal(FraudDetectionType.CODE_GUESSING, severity, details)
        _detections_record([signal], coupon=None, user=user, redemption=None, client=client, now=now)


def _guessing_blocked(*, user, client: ClientInfo, now: datetime) -> bool:
    """Checked before any lookup, so that a blocked guesser gets one answer whatever the code:
    otherwise `fraud_blocked` for a real code against `coupon_not_found` would still tell them apart."""
    if not selectors.code_guessing(user=user, client=client, now=now).blocked:
        return False
    logger.warning("coupon code guessing blocked for user %s from %s", user.pk, client.ip or "an unknown address")
    return True


@transaction.atomic
def coupon_validate(
    *,
    user,
    code: str,
    tier: str | None = None,
    billing_cycle: str | None = None,
    amount_usd: Decimal | None = None,
    client: ClientInfo,
) -> Validation:
    """`coupons/validate/`: the verdict and preview of `selectors.coupon_validate`. It changes nothing
    of the coupon or the caller; an unknown code is recorded as a guess, as at redemption."""
    now = timezone.now()
    if _guessing_blocked(user=user, client=client, now=now):
        return Validation(verdict=Verdict(Reason.FRAUD_BLOCKED), preview=Preview())
    validation = selectors.coupon_validate(
        user=user, code=code, tier=tier, billing_cycle=billing_cycle, amount_usd=amount_usd, client=client, now=now
    )
    if validation.verdict.reason == Reason.COUPON_NOT_FOUND:
        _guess_record(user=user, code=code, client=client, channel=GuessChannel.VALIDATE, now=now)
    return validation


@conflict_retrying
def coupon_redeem(
    *,
    user,
    code: str,
    tier: str | None = None,
    billing_cycle: str | None = None,
    amount_usd: Decimal | None = None,
    client: ClientInfo,
) -> CouponRedemption:
    """`coupons/redeem/`: validation and the coupon's effect in one transaction.

    Effects: credits -> a grant with source `coupon`; a price discount -> off the next renewal of
    the active paid subscription; free months -> its period (or trial) extended; byok_migration ->
    an active perpetual license linked on the redemption. A refusal raises `CouponRefused` after
    recording the failed redemption and its fraud detections.
    """
    now = timezone.now()
    try:
        if _guessing_blocked(user=user, client=client, now=now):
            raise _Refusal(Reason.FRAUD_BLOCKED)
        with transaction.atomic():
            return _redeem(
                user=user,
                code=code,
                tier=tier,
                billing_cycle=billing_cycle,
                amount_usd=amount_usd,
                client=client,
                now=now,
            )
    except _Refusal as refusal:
        _refusal_record(refusal, user=user, code=code, client=client, now=now)
        raise CouponRefused(refusal.reason) from None


@transaction.atomic
def _refusal_record(refusal: _Refusal, *, user, code: str, client: ClientInfo, now: datetime) -> CouponRedemption:
    redemption = CouponRedemption.objects.create(
        coupon=refusal.coupon,
        coupon_code=selectors.code_normalize(code)[:50],
        user=user,
        campaign=refusal.campaign,
        redemption_date=now,
        status=RedemptionStatus.FAILED,
        failure_reason=refusal.reason,
        original_amount_usd=refusal.preview.original_amount_usd,
        ip_address=client.ip,
        user_agent=client.user_agent,
        device_fingerprint=client.device_fingerprint,
    )
    _detections_record(refusal.signals, coupon=refusal.coupon, user=user, redemption=redemption, client=client, now=now)
    if refusal.reason == Reason.COUPON_NOT_FOUND:
        _guess_record(user=user, code=code, client=client, channel=GuessChannel.REDEEM, now=now)
    _count(refusal.reason)
    return redemption


# Coupons held by a checkout (registered with subscriptions.discounts)


@conflict_retrying
def coupon_checkout_hold(*, user, code: str, tier: str, billing_cycle: str, amount_usd: Decimal, client: ClientInfo):
    """A price discount for a subscription checkout, inside subscription start's transaction (which
    holds the user's subscription lock). The coupon is held by a pending redemption, which takes a
    use, until the checkout is paid. A refusal raises `CouponRefused` and, with the start, writes nothing."""
    now = timezone.now()
    if _guessing_blocked(user=user, client=client, now=now):
        raise CouponRefused(Reason.FRAUD_BLOCKED)
    coupon, campaign = _lock_coupon(code)
    assessment = selectors.coupon_assess(
        coupon=coupon,
        campaign=campaign,
        user=user,
        subscription=None,
        purchase=Purchase(tier=tier, billing_cycle=billing_cycle, amount_usd=amount_usd),
        client=client,
        now=now,
        at_checkout=True,
    )
    verdict, preview = assessment.verdict, assessment.preview
    if not verdict.valid:
        raise CouponRefused(verdict.reason)
    redemption = _redemption_take(
        coupon=coupon,
        campaign=campaign,
        user=user,
        subscription=None,
        preview=preview,
        client=client,
        status=RedemptionStatus.PENDING,
        now=now,
    )
    _detections_record(verdict.signals, coupon=coupon, user=user, redemption=redemption, client=client, now=now)
    # The totals row exists before the payment confirms, which then only updates it.
    CouponUsageLimit.objects.get_or_create(coupon=coupon)
    return CheckoutDiscount(
        redemption_id=str(redemption.pk), coupon_code=coupon.code, discount_usd=preview.discount_usd
    )


@transaction.atomic
def coupon_checkout_confirm(*, redemption_id: str, subscription) -> Decimal:
    """The checkout holding the coupon was paid: its redemption succeeds, linked to the subscription.
    Idempotent. Returns the discount the checkout took off."""
    redemption = CouponRedemption.objects.select_for_update().filter(pk=redemption_id).first()
    if redemption is None:
        logger.warning("a paid checkout names coupon redemption %s, which does not exist", redemption_id)
        return Decimal("0.00")
    if redemption.status == RedemptionStatus.PENDING:
        now = timezone.now()
        redemption.status = RedemptionStatus.SUCCESS
        redemption.subscription = subscription
        redemption.redemption_date = now
        redemption.save(update_fields=["status", "subscription", "redemption_date", "updated_at"])
        _usage_count(redemption, now)
        _count(RedemptionStatus.SUCCESS)
    elif redemption.status != RedemptionStatus.SUCCESS:
        logger.error("checkout paid with coupon redemption %s, which is %s", redemption_id, redemption.status)
    return redemption.discount_applied_usd


def abandoned_checkouts(*, now: datetime) -> list:
    return list(
        CouponRedemption.objects.filter(
            status=RedemptionStatus.PENDING, redemption_date__lt=now - settings.COUPON_CHECKOUT_HOLD
        ).values_list("pk", flat=True)
    )


@transaction.atomic
def abandoned_checkout_release(*, redemption_id) -> bool:
    """A checkout that held a coupon and was never paid gives the use, and the campaign's budget, back."""
    redemption = CouponRedemption.objects.select_for_update().filter(pk=redemption_id).first()
    if redemption is None or redemption.status != RedemptionStatus.PENDING:
        return False
    redemption.status = RedemptionStatus.FAILED
    redemption.failure_reason = Reason.CHECKOUT_ABANDONED
    redemption.save(update_fields=["status", "failure_reason", "updated_at"])
    if redemption.campaign_id and redemption.discount_applied_usd:
        campaign = CouponCampaign.objects.select_for_update().get(pk=redemption.campaign_id)
        campaign.spent_usd = max(Decimal("0.00"), campaign.spent_usd - redemption.discount_applied_usd)
        campaign.save(update_fields=["spent_usd", "updated_at"])
    return True


# Fraud review


@transaction.atomic
def fraud_detection_resolve(*, detection_id, actor, resolution: str) -> CouponFraudDetection:
    """Staff close a detection with what they decided; audited."""
    resolution = (resolution or "").strip()
    if not resolution:
        raise RuleViolation("Say how this detection was resolved.", code=ErrorCode.RESOLUTION_REQUIRED)
    detection = CouponFraudDetection.objects.select_for_update().filter(pk=detection_id).first()
    if detection is None:
        raise NotFound("No fraud detection with this id.", code=ErrorCode.DETECTION_NOT_FOUND)
    if detection.resolved_at is not None:
        raise Conflict("This detection is already resolved.", code=ErrorCode.ALREADY_RESOLVED)
    previous = snapshot(detection)
    detection.is_flagged = False
    detection.resolved_at = timezone.now()
    detection.resolved_by = actor
    detection.resolution = resolution
    detection.save()
    audit_model_change(action=AuditAction.RESOLVE, instance=detection, previous_value=previous, actor=actor)
    return detection


# Coupons (staff)

COUPON_FIELDS = frozenset(
    {
        "code",
        "description",
        "coupon_type",
        "discount_type",
        "discount_value",
        "applicable_tiers",
        "applicable_billing_cycles",
        "min_purchase_usd",
        "new_customers_only",
        "valid_from",
        "valid_until",
        "max_uses",
        "max_uses_per_user",
        "is_active",
    }
)


def _coupon_save(coupon: Coupon) -> None:
    """Validates the coupon's fields and shape (model rules), then saves; a taken code is a 409."""
    try:
        coupon.full_clean(exclude=["created_by", "deleted_by"], validate_constraints=False)
    except ValidationError as invalid:
        raise RuleViolation(
            "The coupon is not valid.", code=ErrorCode.INVALID_COUPON, extra={"errors": invalid.message_dict}
        ) from None
    duplicates = selectors.coupons_by_code(coupon.code).exclude(pk=coupon.pk)
    if duplicates.exists():
        raise Conflict(f"The code {selectors.code_normalize(coupon.code)} is taken.", code=ErrorCode.CODE_TAKEN)
    try:
        # The check constraints (percentage at most 100, dates in order): a 422, not an IntegrityError.
        coupon.validate_constraints(exclude=["created_by", "deleted_by"])
    except ValidationError as invalid:
        raise RuleViolation(
            "The coupon is not valid.", code=ErrorCode.INVALID_COUPON, extra={"errors": invalid.message_dict}
        ) from None
    try:
        with transaction.atomic():
            coupon.save()
    except IntegrityError:
        if selectors.coupons_by_code(coupon.code).exclude(pk=coupon.pk).exists():
            raise Conflict("The code is taken.", code=ErrorCode.CODE_TAKEN) from None
        raise


def _coupon_locked(coupon_id) -> Coupon:
    try:
        coupon = Coupon.objects.select_for_update().filter(pk=coupon_id).first()
    except ValidationError:
        coupon = None
    if coupon is None:
        raise NotFound("No coupon with this id.", code=ErrorCode.COUPON_NOT_FOUND)
    return coupon


@conflict_retrying
@transaction.atomic
def coupon_create(*, actor, campaign_id=None, **fields) -> Coupon:
    unknown = set(fields) - COUPON_FIELDS
    if unknown:
        raise TypeError(f"unknown coupon fields: {sorted(unknown)}")
    coupon = Coupon(created_by=actor, **{"valid_from": timezone.now(), **fields})
    _coupon_save(coupon)
    CouponUsageLimit.objects.create(coupon=coupon)
    audit_model_change(action=AuditAction.CREATE, instance=coupon, actor=actor)
    if campaign_id is not None:
        campaign_coupon_attach(campaign_id=campaign_id, coupon_id=coupon.pk, actor=actor)
    return coupon


@transaction.atomic
def coupon_update(*, coupon_id, actor, **changes) -> Coupon:
    unknown = set(changes) - COUPON_FIELDS
    if unknown:
        raise TypeError(f"unknown coupon fields: {sorted(unknown)}")
    coupon = _coupon_locked(coupon_id)
    if coupon.deleted_at is not None:
        raise Conflict("A deleted coupon cannot be changed.", code=ErrorCode.COUPON_DELETED)
    previous = snapshot(coupon)
    for name, value in changes.items():
        setattr(coupon, name, value)
    _coupon_save(coupon)
    audit_model_change(action=AuditAction.UPDATE, instance=coupon, previous_value=previous, actor=actor)
    return coupon


def _coupon_switch(*, coupon_id, actor, is_active: bool) -> Coupon:
    coupon = _coupon_locked(coupon_id)
    if coupon.deleted_at is not None:
        raise Conflict("A deleted coupon cannot be changed.", code=ErrorCode.COUPON_DELETED)
    previous = snapshot(coupon)
    coupon.is_active = is_active
    coupon.save(update_fields=["is_active", "updated_at"])
    action = AuditAction.ACTIVATE if is_active else AuditAction.DEACTIVATE
    audit_model_change(action=action, instance=coupon, previous_value=previous, actor=actor)
    return coupon


@transaction.atomic
def coupon_activate(*, coupon_id, actor) -> Coupon:
    return _coupon_switch(coupon_id=coupon_id, actor=actor, is_active=True)


@transaction.atomic
def coupon_deactivate(*, coupon_id, actor) -> Coupon:
    return _coupon_switch(coupon_id=coupon_id, actor=actor, is_active=False)


@transaction.atomic
def coupon_delete(*, coupon_id, actor) -> Coupon:
    """A soft delete: the coupon stops validating, its redemptions and analytics stay. Idempotent."""
    coupon = _coupon_locked(coupon_id)
    if coupon.deleted_at is not None:
        return coupon
    previous = snapshot(coupon)
    coupon.deleted_at = timezone.now()
    coupon.deleted_by = actor
    coupon.is_active = False
    coupon.save(update_fields=["deleted_at", "deleted_by", "is_active", "updated_at"])
    audit_model_change(action=AuditAction.DELETE, instance=coupon, previous_value=previous, actor=actor)
    return coupon


# Campaigns (staff)

CAMPAIGN_FIELDS = frozenset({"name", "description", "starts_at", "ends_at", "budget_usd", "is_active"})


def _campaign_save(campaign: CouponCampaign) -> None:
    try:
        campaign.full_clean(exclude=["created_by"])
    except ValidationError as invalid:
        raise RuleViolation(
            "The campaign is not valid.", code=ErrorCode.INVALID_CAMPAIGN, extra={"errors": invalid.message_dict}
        ) from None
    campaign.save()


def _campaign_locked(campaign_id) -> CouponCampaign:
    try:
        campaign = CouponCampaign.objects.select_for_update().filter(pk=campaign_id).first()
    except ValidationError:
        campaign = None
    if campaign is None:
        raise NotFound("No campaign with this id.", code=ErrorCode.CAMPAIGN_NOT_FOUND)
    return campaign


@transaction.atomic
def campaign_create(*, actor, **fields) -> CouponCampaign:
    campaign = CouponCampaign(created_by=actor, **fields)
    _campaign_save(campaign)
    audit_model_change(action=AuditAction.CREATE, instance=campaign, actor=actor)
    return campaign


@transaction.atomic
def campaign_update(*, campaign_id, actor, **changes) -> CouponCampaign:
    unknown = set(changes) - CAMPAIGN_FIELDS
    if unknown:
        raise TypeError(f"unknown campaign fields: {sorted(unknown)}")
    campaign = _campaign_locked(campaign_id)
    previous = snapshot(campaign)
    for name, value in changes.items():
        setattr(campaign, name, value)
    _campaign_save(campaign)
    audit_model_change(action=AuditAction.UPDATE, instance=campaign, previous_value=previous, actor=actor)
    return campaign


@transaction.atomic
def campaign_delete(*, campaign_id, actor) -> None:
    """Only a campaign nothing was redeemed under may go (its coupons stay, detached); one with
    history is deactivated instead."""
    campaign = _campaign_locked(campaign_id)
    if campaign.redemptions.exists():
        raise Conflict(
            "Coupons of this campaign were redeemed: deactivate it instead.", code=ErrorCode.CAMPAIGN_HAS_REDEMPTIONS
        )
    previous = snapshot(campaign)
    campaign_pk = campaign.pk
    campaign.delete()
    audit_record(
        action=AuditAction.DELETE,
        resource_type=resource_type_of(CouponCampaign),
        resource_id=str(campaign_pk),
        previous_value=previous,
        actor=actor,
    )


@transaction.atomic
def campaign_coupon_attach(*, campaign_id, coupon_id, actor) -> CampaignCoupon:
    coupon = _coupon_locked(coupon_id)  # coupon before campaign, the order redemption locks them in
    campaign = _campaign_locked(campaign_id)
    if coupon.deleted_at is not None:
        raise Conflict("A deleted coupon cannot join a campaign.", code=ErrorCode.COUPON_DELETED)
    link = CampaignCoupon.objects.filter(coupon=coupon).first()
    if link is not None:
        if link.campaign_id == campaign.pk:
            return link
        raise Conflict(
            "This coupon belongs to another campaign; detach it first.",
            code=ErrorCode.COUPON_IN_ANOTHER_CAMPAIGN,
            extra={"campaign_id": str(link.campaign_id)},
        )
    link = CampaignCoupon.objects.create(campaign=campaign, coupon=coupon)
    audit_model_change(action=AuditAction.CREATE, instance=link, actor=actor)
    return link


@transaction.atomic
def campaign_coupon_detach(*, campaign_id, coupon_id, actor) -> None:
    campaign = _campaign_locked(campaign_id)
    link = CampaignCoupon.objects.filter(campaign=campaign, coupon_id=coupon_id).first()
    if link is None:
        raise NotFound("This coupon is not in this campaign.", code=ErrorCode.COUPON_NOT_IN_CAMPAIGN)
    previous = snapshot(link)
    link_pk = link.pk
    link.delete()
    audit_record(
        action=AuditAction.DELETE,
        resource_type=resource_type_of(CampaignCoupon),
        resource_id=str(link_pk),
        previous_value=previous,
        actor=actor,
    )


CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: codes are read and typed by people
CODE_RANDOM_LENGTH = 10


def _random_codes(prefix: str, count: int) -> set[str]:
    codes = set()
    while len(codes) < count:
        codes.add(prefix + "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_RANDOM_LENGTH)))
    return codes


def _codes_taken(codes: set[str]) -> set[str]:
    existing = Coupon.objects.alias(code_upper=Upper("code")).filter(code_upper__in=codes)
    return set(existing.values_list("code", flat=True))


@conflict_retrying
@transaction.atomic
def campaign_coupons_generate(*, campaign_id, actor, count: int, prefix: str = "", **template) -> list[Coupon]:
    """`count` unique single-use codes for the campaign, each a coupon made from `template` (its
    type, value, dates, ...) with max_uses 1. Collisions with existing codes (about 32**-10 each)
    are drawn again. One audit row lists the codes."""
    if not 1 <= count <= settings.COUPON_BULK_MAX:
        raise RuleViolation(f"Generate 1 to {settings.COUPON_BULK_MAX} codes at a time.", code=ErrorCode.TOO_MANY_CODES)
    campaign = _campaign_locked(campaign_id)
    prefix = selectors.code_normalize(prefix)
    sample = Coupon(
        created_by=actor,
        code=prefix + "X" * CODE_RANDOM_LENGTH,
        # valid from now unless the template says; single-use whatever the template says
        **{"valid_from": timezone.now(), **template, "max_uses": 1, "max_uses_per_user": 1},
    )
    try:
        # Check constraints too (percentage at most 100, dates in order); the sample's code is no real code.
        sample.full_clean(exclude=["created_by", "deleted_by", "code"])
    except ValidationError as invalid:
        raise RuleViolation(
            "The coupon template is not valid.", code=ErrorCode.INVALID_COUPON, extra={"errors": invalid.message_dict}
        ) from None
    codes = _random_codes(prefix, count)
    taken = _codes_taken(codes)
    while taken:
        codes = (codes - taken) | _random_codes(prefix, len(taken))
        taken = _codes_taken(codes)
    fields = {name: getattr(sample, name) for name in COUPON_FIELDS - {"code"}}
    coupons = Coupon.objects.bulk_create(Coupon(code=code, created_by=actor, **fields) for code in sorted(codes))
    CouponUsageLimit.objects.bulk_create(CouponUsageLimit(coupon=coupon) for coupon in coupons)
    CampaignCoupon.objects.bulk_create(CampaignCoupon(campaign=campaign, coupon=coupon) for coupon in coupons)
    audit_record(
        action=AuditAction.CREATE,
        resource_type=resource_type_of(Coupon),
        resource_id=f"campaign:{campaign.pk}",
        new_value={"campaign_id": campaign.pk, "count": count, "template": fields, "codes": sorted(codes)},
        actor=actor,
        status_code=201,
    )
    return coupons


# Analytics


@transaction.atomic
def coupon_analytics_snapshot(*, day: date) -> int:
    """Rebuilds each coupon's figures for `day` (idempotent: run it again and the rows are the
    same). Conversions: the day's redeemers who have paid since their redemption."""
    start = timezone.make_aware(datetime.combine(day, datetime.min.time()))
    end = start + timedelta(days=1)
    of_day = CouponRedemption.objects.filter(redemption_date__gte=start, redemption_date__lt=end, coupon__isnull=False)
    succeeded = Q(status=RedemptionStatus.SUCCESS)
    paid_since = PaymentTransaction.objects.filter(
        user_id=OuterRef("user_id"), status=PaymentStatus.SUCCEEDED, completed_at__gte=OuterRef("redemption_date")
    )
    figures = (
        of_day.alias(converted=Exists(paid_since))
        .values("coupon_id")
        .annotate(
            redemptions=Count("pk", filter=succeeded),
            failed=Count("pk", filter=Q(status=RedemptionStatus.FAILED)),
            users=Count("user", filter=succeeded, distinct=True),
            converted_users=Count("user", filter=succeeded & Q(converted=True), distinct=True),
            discount=Sum("discount_applied_usd", filter=succeeded),
            revenue=Sum("final_amount_usd", filter=succeeded),
        )
    )
    seen = []
    for row in figures:
        CouponAnalyticsSnapshot.objects.update_or_create(
            coupon_id=row["coupon_id"],
            snapshot_date=day,
            defaults={
                "redemptions": row["redemptions"],
                "failed_redemptions": row["failed"],
                "unique_users": row["users"],
                "discount_total_usd": row["discount"] or Decimal("0.00"),
                "revenue_usd": row["revenue"] or Decimal("0.00"),
                "conversions": row["converted_users"],
            },
        )
        seen.append(row["coupon_id"])
    CouponAnalyticsSnapshot.objects.filter(snapshot_date=day).exclude(coupon_id__in=seen).delete()
    return len(seen)


DEMO_COUPONS = (
    {"code": "WELCOME20", "coupon_type": "percentage_discount", "discount_type": "percentage", "discount_value": 20},
    {"code": "BONUS5K", "coupon_type": "fixed_amount_discount", "discount_type": "credits", "discount_value": 5000},
    {"code": "EXTRAMONTH", "coupon_type": "duration_bonus", "discount_type": "months_free", "discount_value": 1},
    {"code": "BYOK-MIGRATE", "coupon_type": "byok_migration", "discount_type": "", "discount_value": 0},
)


@transaction.atomic
def demo_coupons_seed() -> int:
    """The development demo: a launch campaign with one coupon of each kind. Idempotent."""
    now = timezone.now()
    campaign, _ = CouponCampaign.objects.get_or_create(
        name="Demo launch",
        defaults={"starts_at": now, "ends_at": now + timedelta(days=365), "budget_usd": Decimal("1000.00")},
    )
    created = 0
    for fields in DEMO_COUPONS:
        if selectors.coupons_by_code(fields["code"]).exists():
            continue
        coupon = Coupon.objects.create(valid_from=now, description="Demo coupon", **fields)
        CouponUsageLimit.objects.create(coupon=coupon)
        CampaignCoupon.objects.create(campaign=campaign, coupon=coupon)
        created += 1
    return created
