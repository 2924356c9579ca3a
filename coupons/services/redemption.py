"""A customer's validation and redemption of a code: the coupon's effect, the use it takes, the fraud
detections around it, and unknown codes tried again and again (code guessing).

Redemption locks, in this order, the user's live subscription, the coupon row and its campaign row,
then (through the effect) the credit balance or the new license; subscription start takes the same
order. Under the coupon's lock the usage limits are counted exactly, and each redemption takes the
next use number, which unique constraints back up. A refused redemption is recorded as `failed`,
with its reason and fraud detections, in its own transaction, for fraud analysis.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from billing_project.enums import EventType
from billing_project.errors import RuleViolation
from billing_project.metrics import COUPON_REDEMPTIONS
from billing_project.net import ClientInfo
from billing_project.outbound import event_emit
from billing_project.transactions import conflict_retrying
from coupons.codes import Reason
from coupons.models import (
    PRICE_DISCOUNTS,
    Coupon,
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
from coupons.selectors import validation
from coupons.selectors.fraud import FraudSignal, code_guessing
from coupons.selectors.validation import (
    TAKES_A_USE,
    Preview,
    Validation,
    Verdict,
    code_normalize,
    coupon_assess,
    coupons_by_code,
    purchase_for,
)
from credits.models import CreditSource
from credits.services import credit_grant
from licensing.services import license_grant_by_coupon
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

    # The codes it carries, with their text: the API's documentation lists them.
    codes = {str(reason): text for reason, text in REASON_TEXT.items()}

    def __init__(self, reason: Reason):
        super().__init__(REASON_TEXT[reason], code=str(reason))


@dataclass
class _Refusal(Exception):
    reason: Reason
    coupon: Coupon | None = None
    campaign: CouponCampaign | None = None
    preview: Preview = field(default_factory=Preview)
    signals: list[FraudSignal] = field(default_factory=list)


def coupon_lock(code: str) -> tuple[Coupon | None, CouponCampaign | None]:
    # FOR NO KEY UPDATE: redemptions still queue on the coupon, but rows that merely reference the
    # coupon or campaign (a refusal being recorded: its foreign keys take FOR KEY SHARE, campaign
    # then coupon) neither wait for nor deadlock with the redemption holding these locks.
    coupon = coupons_by_code(code).select_for_update(no_key=True).first()
    if coupon is None:
        return None, None
    campaign = (
        CouponCampaign.objects.select_for_update(of=("self",), no_key=True).filter(coupon_links__coupon=coupon).first()
    )
    return coupon, campaign


def redemption_take(
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


def usage_count(redemption: CouponRedemption, now: datetime) -> None:
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


def detections_record(
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


def coupon_redeemed_emit(*, redemption: CouponRedemption, coupon: Coupon) -> None:
    """coupon.redeemed: a redemption succeeded (at once, or when the checkout holding it was paid)."""
    event_emit(
        type=EventType.COUPON_REDEEMED,
        subject=f"coupon:{coupon.pk}",
        data={
            "redemption_id": str(redemption.pk),
            "coupon_id": str(coupon.pk),
            "coupon_code": coupon.code,
            "coupon_type": coupon.coupon_type,
            "discount_type": coupon.discount_type,
            "user_id": str(redemption.user_id),
            "subscription_id": str(redemption.subscription_id) if redemption.subscription_id else None,
            "discount_applied_usd": f"{redemption.discount_applied_usd:.2f}",
            "final_amount_usd": f"{redemption.final_amount_usd:.2f}",
            "currency": redemption.currency,
            "credits_granted": redemption.credits_granted,
            "months_granted": redemption.months_granted,
            "license_id": str(redemption.license_granted_id) if redemption.license_granted_id else None,
            "redeemed_at": redemption.redemption_date.isoformat(),
        },
        user=redemption.user,
    )


def redemption_count(result: str) -> None:
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
    coupon, campaign = coupon_lock(code)
    purchase = purchase_for(subscription=subscription, tier=tier, billing_cycle=billing_cycle, amount_usd=amount_usd)
    assessment = coupon_assess(
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
    redemption = redemption_take(
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
    usage_count(redemption, now)
    detections_record(verdict.signals, coupon=coupon, user=user, redemption=redemption, client=client, now=now)
    coupon_redeemed_emit(redemption=redemption, coupon=coupon)
    redemption_count(RedemptionStatus.SUCCESS)
    return redemption


# Code guessing: unknown codes tried through validate and redeem are counted per user and per IP


def _guess_record(*, user, code: str, client: ClientInfo, channel: GuessChannel, now: datetime) -> None:
    """Records an unknown code, and a fraud detection when the caller's guesses reach the flag
    level (medium) or the block level (high), by their own count or their address's."""
    CouponCodeGuess.objects.create(
        user=user, ip_address=client.ip, code=code_normalize(code)[:50], channel=channel, tried_at=now
    )
    logger.info(
        "unknown coupon code tried through %s by user %s from %s", channel, user.pk, client.ip or "an unknown address"
    )
    guessing = code_guessing(user=user, client=client, now=now)
    flag, block = settings.COUPON_GUESSING
    levels = {flag: FraudSeverity.MEDIUM, block: FraudSeverity.HIGH}
    severity = levels.get(guessing.by_user) or (FraudSeverity.HIGH if guessing.from_ip == block else None)
    if severity is not None:
        details = {"unknown_codes_last_hour": guessing.by_user, "unknown_codes_from_ip_last_hour": guessing.from_ip}
        signal = FraudSignal(FraudDetectionType.CODE_GUESSING, severity, details)
        detections_record([signal], coupon=None, user=user, redemption=None, client=client, now=now)


def guessing_blocked(*, user, client: ClientInfo, now: datetime) -> bool:
    """Checked before any lookup, so that a blocked guesser gets one answer whatever the code:
    otherwise `fraud_blocked` for a real code against `coupon_not_found` would still tell them apart."""
    if not code_guessing(user=user, client=client, now=now).blocked:
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
    """`coupons/validate/`: the verdict and preview of `selectors.validation.coupon_validate`. It changes
    nothing of the coupon or the caller; an unknown code is recorded as a guess, as at redemption."""
    now = timezone.now()
    if guessing_blocked(user=user, client=client, now=now):
        return Validation(verdict=Verdict(Reason.FRAUD_BLOCKED), preview=Preview())
    result = validation.coupon_validate(
        user=user, code=code, tier=tier, billing_cycle=billing_cycle, amount_usd=amount_usd, client=client, now=now
    )
    if result.verdict.reason == Reason.COUPON_NOT_FOUND:
        _guess_record(user=user, code=code, client=client, channel=GuessChannel.VALIDATE, now=now)
    return result


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
        if guessing_blocked(user=user, client=client, now=now):
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
        coupon_code=code_normalize(code)[:50],
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
    detections_record(refusal.signals, coupon=refusal.coupon, user=user, redemption=redemption, client=client, now=now)
    if refusal.reason == Reason.COUPON_NOT_FOUND:
        _guess_record(user=user, code=code, client=client, channel=GuessChannel.REDEEM, now=now)
    redemption_count(refusal.reason)
    return redemption
