"""Finding a coupon, what redeeming it would give, and the validation steps of SPEC 4 in their order."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import QuerySet
from django.db.models.functions import Upper

from billing_project.email_verification import email_is_verified
from billing_project.enums import SubscriptionTier
from billing_project.money import usd_round
from coupons.codes import Reason
from coupons.models import (
    PRICE_DISCOUNTS,
    Coupon,
    CouponCampaign,
    CouponRedemption,
    CouponType,
    DiscountType,
    RedemptionStatus,
    ValidationRuleType,
)
from coupons.selectors.fraud import FraudSignal, fraud_signals
from licensing.models import LicenseStatus, PerpetualLicense
from subscriptions.models import PaymentStatus, PaymentTransaction, Subscription, SubscriptionStatus, TierConfig
from subscriptions.selectors import subscription_live_for

TAKES_A_USE = (RedemptionStatus.SUCCESS, RedemptionStatus.PENDING)


def code_normalize(code: str) -> str:
    return (code or "").strip().upper()


def coupons_by_code(code: str) -> QuerySet:
    """The coupon with this code, whatever its case (through the index on UPPER(code))."""
    return Coupon.objects.alias(code_upper=Upper("code")).filter(code_upper=code_normalize(code))


def campaign_of(coupon: Coupon) -> CouponCampaign | None:
    link = coupon.campaign_links.select_related("campaign").first()
    return link.campaign if link is not None else None


# What a coupon is asked about


@dataclass(frozen=True)
class Purchase:
    """What the coupon would apply to: the tier and cycle bought (or the live subscription's), and
    the amount a price discount is taken from."""

    tier: str | None = None
    billing_cycle: str | None = None
    amount_usd: Decimal | None = None


@dataclass(frozen=True)
class Preview:
    """What redeeming would give, and what it costs the campaign's budget."""

    original_amount_usd: Decimal = Decimal("0.00")
    discount_usd: Decimal = Decimal("0.00")
    final_amount_usd: Decimal = Decimal("0.00")
    credits: int = 0
    months_free: int = 0
    license: bool = False
    cost_usd: Decimal = Decimal("0.00")


def purchase_for(*, subscription: Subscription | None, tier=None, billing_cycle=None, amount_usd=None) -> Purchase:
    """Given values win; the live paid subscription fills the gaps."""
    paid = subscription if subscription is not None and subscription.tier != SubscriptionTier.FREE else None
    if amount_usd is None and tier:
        config = TierConfig.objects.filter(tier=tier).first()
        if config is not None and billing_cycle:
            amount_usd = config.price_for(billing_cycle)
    if amount_usd is None and paid is not None and (not tier or tier == paid.tier):
        amount_usd = paid.base_price_usd
    return Purchase(
        tier=tier or (paid.tier if paid else None),
        billing_cycle=billing_cycle or (paid.billing_cycle if paid else None),
        amount_usd=amount_usd,
    )


def _monthly_price(tier: str | None) -> Decimal:
    config = TierConfig.objects.filter(tier=tier).first() if tier else None
    return config.monthly_price_usd if config is not None else Decimal("0.00")


def preview_for(coupon: Coupon, *, purchase: Purchase) -> Preview:
    """The coupon's effect on `purchase`: a discount never takes more than the amount (the final
    amount is never below zero); credits are valued at CREDIT_VALUE_USD, free months at the tier's
    monthly price and a license at its list price, which is what they cost a campaign's budget."""
    if coupon.coupon_type == CouponType.BYOK_MIGRATION:
        price = usd_round(settings.LICENSE_PRICE_USD)
        return Preview(original_amount_usd=price, discount_usd=price, license=True, cost_usd=price)
    value = coupon.discount_value
    if coupon.discount_type == DiscountType.CREDITS:
        credits = int(value)
        return Preview(credits=credits, cost_usd=usd_round(credits * settings.CREDIT_VALUE_USD))
    if coupon.discount_type == DiscountType.MONTHS_FREE:
        months = int(value)
        return Preview(months_free=months, cost_usd=usd_round(months * _monthly_price(purchase.tier)))
    amount = usd_round(purchase.amount_usd or Decimal("0.00"))
    discount = usd_round(amount * value / 100) if coupon.discount_type == DiscountType.PERCENTAGE else usd_round(value)
    discount = min(discount, amount)
    return Preview(
        original_amount_usd=amount, discount_usd=discount, final_amount_usd=amount - discount, cost_usd=discount
    )


# The validation steps


@dataclass(frozen=True)
class Verdict:
    reason: Reason | None = None
    signals: list[FraudSignal] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.reason is None


def _coupon_reason(coupon: Coupon, now: datetime) -> Reason | None:
    if coupon.deleted_at is not None:
        return Reason.COUPON_DELETED
    if not coupon.is_active:
        return Reason.COUPON_INACTIVE
    if coupon.valid_from > now:
        return Reason.COUPON_NOT_YET_VALID
    if coupon.valid_until is not None and coupon.valid_until <= now:
        return Reason.COUPON_EXPIRED
    return None


def _campaign_reason(campaign: CouponCampaign | None, cost_usd: Decimal, now: datetime) -> Reason | None:
    if campaign is None:
        return None
    if not campaign.is_active:
        return Reason.CAMPAIGN_INACTIVE
    if not campaign.starts_at <= now < campaign.ends_at:
        return Reason.CAMPAIGN_NOT_RUNNING
    if campaign.budget_usd is not None and campaign.spent_usd + cost_usd > campaign.budget_usd:
        return Reason.CAMPAIGN_BUDGET_EXHAUSTED
    return None


def _limits_reason(coupon: Coupon, user) -> Reason | None:
    uses = coupon.redemptions.filter(status__in=TAKES_A_USE)
    if coupon.max_uses is not None and uses.count() >= coupon.max_uses:
        return Reason.MAX_USES_REACHED
    if uses.filter(user=user).count() >= coupon.max_uses_per_user:
        return Reason.USER_LIMIT_REACHED
    return None


def _purchase_reason(coupon: Coupon, purchase: Purchase) -> Reason | None:
    if coupon.applicable_tiers and purchase.tier not in coupon.applicable_tiers:
        return Reason.TIER_NOT_ELIGIBLE
    if coupon.applicable_billing_cycles and purchase.billing_cycle not in coupon.applicable_billing_cycles:
        return Reason.BILLING_CYCLE_NOT_ELIGIBLE
    if coupon.min_purchase_usd is not None and (purchase.amount_usd or 0) < coupon.min_purchase_usd:
        return Reason.MINIMUM_PURCHASE_NOT_MET
    return None


def is_paying_customer(user) -> bool:
    """Has this user ever paid: a subscription payment, or a license bought for money."""
    if PaymentTransaction.objects.filter(user=user, status=PaymentStatus.SUCCEEDED).exists():
        return True
    return (
        PerpetualLicense.objects.filter(user=user, purchase_price_usd__gt=0)
        .exclude(status=LicenseStatus.PENDING)
        .exists()
    )


def _rules_reason(coupon: Coupon, user, client, now: datetime) -> Reason | None:
    for rule in coupon.validation_rules.filter(is_active=True).order_by("created_at"):
        value = rule.rule_value if isinstance(rule.rule_value, dict) else {}
        if rule.rule_type == ValidationRuleType.FIRST_TIME_USER:
            if CouponRedemption.objects.filter(user=user, status__in=TAKES_A_USE).exists():
                return Reason.RULE_FIRST_TIME_USER
        elif rule.rule_type == ValidationRuleType.EMAIL_DOMAIN:
            # Anyone can sign up with any address: only a proven one says which domain they belong to.
            if not email_is_verified(user=user):
                return Reason.EMAIL_NOT_VERIFIED
            domains = {str(domain).lower().lstrip("@") for domain in value.get("domains", [])}
            if (user.email or "").rpartition("@")[2].lower() not in domains:
                return Reason.RULE_EMAIL_DOMAIN
        elif rule.rule_type == ValidationRuleType.MIN_ACCOUNT_AGE_DAYS:
            if user.date_joined > now - timedelta(days=int(value.get("days", 0))):
                return Reason.RULE_MIN_ACCOUNT_AGE
        elif rule.rule_type == ValidationRuleType.MAX_REDEMPTIONS_PER_IP and client.ip:
            from_ip = coupon.redemptions.filter(status__in=TAKES_A_USE, ip_address=client.ip).count()
            if from_ip >= int(value.get("max", 1)):
                return Reason.RULE_MAX_REDEMPTIONS_PER_IP
    return None


def effect_reason(coupon: Coupon, *, subscription: Subscription | None, purchase: Purchase, at_checkout: bool):
    """What the coupon's effect needs. At a checkout only a price discount applies; redeemed on its
    own, a price discount goes to the next renewal of an active paid subscription, and free months
    extend a paid subscription or trial."""
    paid = subscription if subscription is not None and subscription.tier != SubscriptionTier.FREE else None
    if at_checkout:
        return None if coupon.discount_type in PRICE_DISCOUNTS else Reason.NOT_A_CHECKOUT_DISCOUNT
    if coupon.discount_type in PRICE_DISCOUNTS:
        if paid is None or paid.status != SubscriptionStatus.ACTIVE:
            return Reason.NO_SUBSCRIPTION_TO_DISCOUNT
        if purchase.tier != paid.tier or purchase.billing_cycle != paid.billing_cycle:
            return Reason.APPLY_AT_SUBSCRIPTION_START
        if paid.renewal_discount_usd > 0:
            return Reason.DISCOUNT_ALREADY_PENDING
    if coupon.discount_type == DiscountType.MONTHS_FREE and (
        paid is None or paid.status not in (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIAL)
    ):
        return Reason.NO_SUBSCRIPTION_TO_EXTEND
    return None


def _verdict(
    *,
    coupon: Coupon,
    campaign: CouponCampaign | None,
    user,
    subscription: Subscription | None,
    purchase: Purchase,
    preview: Preview,
    client,
    now: datetime,
    at_checkout: bool,
) -> Verdict:
    reason = (
        _coupon_reason(coupon, now)
        or _campaign_reason(campaign, preview.cost_usd, now)
        or _limits_reason(coupon, user)
        or _purchase_reason(coupon, purchase)
        or (Reason.NEW_CUSTOMERS_ONLY if coupon.new_customers_only and is_paying_customer(user) else None)
        or _rules_reason(coupon, user, client, now)
    )
    if reason is not None:
        return Verdict(reason)
    signals = fraud_signals(coupon=coupon, user=user, client=client, now=now)
    if any(signal.blocks for signal in signals):
        return Verdict(Reason.FRAUD_BLOCKED, signals)
    reason = effect_reason(coupon, subscription=subscription, purchase=purchase, at_checkout=at_checkout)
    return Verdict(reason, signals)


@dataclass(frozen=True)
class Validation:
    verdict: Verdict
    preview: Preview


def coupon_assess(
    *,
    coupon: Coupon | None,
    campaign: CouponCampaign | None,
    user,
    subscription: Subscription | None,
    purchase: Purchase,
    client,
    now: datetime,
    at_checkout: bool = False,
) -> Validation:
    """The validation steps of SPEC 4 in their order (the first that fails is the reason) and what
    redeeming would give. The fraud signals are returned whenever that step is reached: those that do
    not block still flag. Validation reads without locks; redemption calls this under its locks."""
    if coupon is None:
        return Validation(verdict=Verdict(Reason.COUPON_NOT_FOUND), preview=Preview())
    preview = preview_for(coupon, purchase=purchase)
    verdict = _verdict(
        coupon=coupon,
        campaign=campaign,
        user=user,
        subscription=subscription,
        purchase=purchase,
        preview=preview,
        client=client,
        now=now,
        at_checkout=at_checkout,
    )
    return Validation(verdict=verdict, preview=preview)


def coupon_validate(*, user, code: str, tier=None, billing_cycle=None, amount_usd=None, client, now) -> Validation:
    """`coupons/validate/`: would redeeming this code now succeed, and what would it give.
    Changes nothing, records nothing."""
    coupon = coupons_by_code(code).first()
    subscription = subscription_live_for(user=user)
    return coupon_assess(
        coupon=coupon,
        campaign=campaign_of(coupon) if coupon is not None else None,
        user=user,
        subscription=subscription,
        purchase=purchase_for(subscription=subscription, tier=tier, billing_cycle=billing_cycle, amount_usd=amount_usd),
        client=client,
        now=now,
    )
