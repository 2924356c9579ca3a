"""Coupons held by a subscription checkout (registered with `subscriptions.discounts`): a pending
redemption holds the coupon's use until the checkout is paid, or gives it back when it is abandoned.
A hold locks and counts the coupon as a redemption does."""

import logging
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from billing_project.net import ClientInfo
from billing_project.transactions import conflict_retrying
from coupons.codes import Reason
from coupons.models import CouponCampaign, CouponRedemption, CouponUsageLimit, RedemptionStatus
from coupons.selectors.validation import Purchase, coupon_assess
from coupons.services.redemption import (
    CouponRefused,
    coupon_lock,
    coupon_redeemed_emit,
    detections_record,
    guessing_blocked,
    redemption_count,
    redemption_take,
    usage_count,
)
from subscriptions.discounts import CheckoutDiscount

logger = logging.getLogger(__name__)


@conflict_retrying
def coupon_checkout_hold(*, user, code: str, tier: str, billing_cycle: str, amount_usd: Decimal, client: ClientInfo):
    """A price discount for a subscription checkout, inside subscription start's transaction (which
    holds the user's subscription lock). The coupon is held by a pending redemption, which takes a
    use, until the checkout is paid. A refusal raises `CouponRefused` and, with the start, writes nothing."""
    now = timezone.now()
    if guessing_blocked(user=user, client=client, now=now):
        raise CouponRefused(Reason.FRAUD_BLOCKED)
    coupon, campaign = coupon_lock(code)
    assessment = coupon_assess(
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
    redemption = redemption_take(
        coupon=coupon,
        campaign=campaign,
        user=user,
        subscription=None,
        preview=preview,
        client=client,
        status=RedemptionStatus.PENDING,
        now=now,
    )
    detections_record(verdict.signals, coupon=coupon, user=user, redemption=redemption, client=client, now=now)
    # The totals row exists before the payment confirms, which then only updates it.
    CouponUsageLimit.objects.get_or_create(coupon=coupon)
    return CheckoutDiscount(
        redemption_id=str(redemption.pk), coupon_code=coupon.code, discount_usd=preview.discount_usd
    )


@transaction.atomic
def coupon_checkout_confirm(*, redemption_id: str, subscription, currency: str = "usd") -> Decimal:
    """The checkout holding the coupon was paid: its redemption succeeds, linked to the subscription
    and in the checkout's currency (its amounts are that currency's, never converted, as the
    invoice's are). Idempotent. Returns the discount the checkout took off."""
    redemption = CouponRedemption.objects.select_for_update().filter(pk=redemption_id).first()
    if redemption is None:
        logger.warning("a paid checkout names coupon redemption %s, which does not exist", redemption_id)
        return Decimal("0.00")
    if redemption.status == RedemptionStatus.PENDING:
        now = timezone.now()
        redemption.status = RedemptionStatus.SUCCESS
        redemption.subscription = subscription
        redemption.redemption_date = now
        redemption.currency = currency.lower()
        redemption.save(update_fields=["status", "subscription", "redemption_date", "currency", "updated_at"])
        usage_count(redemption, now)
        if redemption.coupon_id:
            coupon_redeemed_emit(redemption=redemption, coupon=redemption.coupon)
        redemption_count(RedemptionStatus.SUCCESS)
    elif redemption.status != RedemptionStatus.SUCCESS:
        logger.error("checkout paid with coupon redemption %s, which is %s", redemption_id, redemption.status)
    return redemption.discount_applied_usd


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
