"""Reads of the coupons app: finding a coupon, the validation steps of SPEC 4 in their order, the
fraud signals around a redemption, and the staff lists and reports. Nothing here writes: redemption
(`coupons.services`) runs these same checks again under the coupon's row lock."""

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, F, Max, QuerySet, Sum
from django.db.models.functions import Upper

from billing_project.email_verification import email_is_verified
from billing_project.enums import SubscriptionTier
from billing_project.money import usd_round
from coupons.codes import Reason
from coupons.models import (
    PRICE_DISCOUNTS,
    Coupon,
    CouponAnalyticsSnapshot,
    CouponCampaign,
    CouponCodeGuess,
    CouponFraudDetection,
    CouponRedemption,
    CouponType,
    DiscountType,
    FraudDetectionType,
    FraudSeverity,
    RedemptionStatus,
    ValidationRuleType,
)
from licensing.models import LicenseStatus, PerpetualLicense
from subscriptions.models import (
    PaymentStatus,
    PaymentTransaction,
    Subscription,
    SubscriptionStatus,
    TierConfig,
)
from subscriptions.selectors import subscription_live_for

TAKES_A_USE = (RedemptionStatus.SUCCESS, RedemptionStatus.PENDING)
BLOCKING = (FraudSeverity.HIGH, FraudSeverity.CRITICAL)
VELOCITY_WINDOW = timedelta(hours=1)
DEVICE_ACCOUNTS_WINDOW = timedelta(days=30)
IP_ACCOUNTS_WINDOW = timedelta(hours=24)


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
class FraudSignal:
    detection_type: FraudDetectionType
    severity: FraudSeverity
    details: dict

    @property
    def blocks(self) -> bool:
        return self.severity in BLOCKING


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


def _level(count: int, levels: tuple[int, int]) -> FraudSeverity | None:
    flag, block = levels
    if count >= block:
        return FraudSeverity.HIGH
    if count >= flag:
        return FraudSeverity.MEDIUM
    return None


def fraud_signals(*, coupon: Coupon, user, client, now: datetime) -> list[FraudSignal]:
    """The patterns SPEC 4 names, from the redemptions already recorded: velocity per user, device
    and IP; several accounts redeeming this coupon from one device, or anything from one IP. Unknown
    codes tried again and again (guessing) are checked before any lookup: `code_guessing`."""
    signals = []
    succeeded = CouponRedemption.objects.filter(status=RedemptionStatus.SUCCESS)
    recent = succeeded.filter(redemption_date__gte=now - VELOCITY_WINDOW)

    def velocity(detection_type, count, levels, **details):
        severity = _level(count, levels)
        if severity is not None:
            signals.append(FraudSignal(detection_type, severity, {"redemptions_last_hour": count, **details}))

    velocity(FraudDetectionType.VELOCITY_USER, recent.filter(user=user).count(), settings.COUPON_VELOCITY_USER)
    if client.device_fingerprint:
        device = client.device_fingerprint
        velocity(
            FraudDetectionType.VELOCITY_DEVICE,
            recent.filter(device_fingerprint=device).count(),
            settings.COUPON_VELOCITY_DEVICE,
        )
        others = (
            succeeded.filter(
                coupon=coupon, device_fingerprint=device, redemption_date__gte=now - DEVICE_ACCOUNTS_WINDOW
            )
            .exclude(user=user)
            .values("user")
            .distinct()
            .count()
        )
        if others:
            severity = FraudSeverity.HIGH if others >= settings.COUPON_ACCOUNTS_PER_DEVICE else FraudSeverity.MEDIUM
            signals.append(
                FraudSignal(FraudDetectionType.MULTIPLE_ACCOUNTS_DEVICE, severity, {"other_accounts": others})
            )
    if client.ip:
        velocity(
            FraudDetectionType.VELOCITY_IP, recent.filter(ip_address=client.ip).count(), settings.COUPON_VELOCITY_IP
        )
        others = (
            succeeded.filter(ip_address=client.ip, redemption_date__gte=now - IP_ACCOUNTS_WINDOW)
            .exclude(user=user)
            .values("user")
            .distinct()
            .count()
        )
        if others >= settings.COUPON_ACCOUNTS_PER_IP_FLAG:
            signals.append(
                FraudSignal(FraudDetectionType.MULTIPLE_ACCOUNTS_IP, FraudSeverity.MEDIUM, {"other_accounts": others})
            )
    return signals


@dataclass(frozen=True)
class Guessing:
    """Unknown codes tried in the last hour by one user, and from their address by anyone."""

    by_user: int
    from_ip: int

    @property
    def blocked(self) -> bool:
        """The guesser is blocked, not the address: another account there that tried no unknown
        code is served, while accounts guessing together from one address are all blocked."""
        block = settings.COUPON_GUESSING[1]
        return self.by_user >= block or (self.by_user > 0 and self.from_ip >= block)


def code_guessing(*, user, client, now: datetime) -> Guessing:
    recent = CouponCodeGuess.objects.filter(tried_at__gte=now - VELOCITY_WINDOW)
    by_user = recent.filter(user=user).count()
    from_ip = recent.filter(ip_address=client.ip).count() if client.ip and by_user else 0
    return Guessing(by_user=by_user, from_ip=from_ip)


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


# Staff lists and reports


def coupons_for_staff() -> QuerySet:
    return (
        Coupon.objects.select_related("created_by", "deleted_by", "usage")
        .prefetch_related("campaign_links")
        .order_by("-created_at")
    )


def redemptions_of_coupon(*, coupon_id) -> QuerySet:
    return CouponRedemption.objects.filter(coupon_id=coupon_id).select_related("user").order_by("-redemption_date")


def campaigns_for_staff() -> QuerySet:
    return CouponCampaign.objects.annotate(coupon_count=Count("coupon_links")).order_by("-starts_at")


def coupons_of_campaign(*, campaign_id) -> QuerySet:
    return coupons_for_staff().filter(campaign_links__campaign_id=campaign_id)


def fraud_detections_for_staff() -> QuerySet:
    return CouponFraudDetection.objects.select_related("coupon", "user", "resolved_by").order_by("-detected_at")


@dataclass(frozen=True)
class PerformanceRow:
    key: str
    name: str
    redemptions: int
    failed_redemptions: int
    unique_users: int
    discount_total_usd: Decimal
    revenue_usd: Decimal
    conversions: int

    @property
    def conversion_rate(self) -> Decimal:
        if not self.unique_users:
            return Decimal("0.0000")
        return (Decimal(self.conversions) / self.unique_users).quantize(Decimal("0.0001"))


@dataclass(frozen=True)
class PerformanceReport:
    date_from: date
    date_to: date
    totals: PerformanceRow
    by_coupon: list[PerformanceRow]
    by_campaign: list[PerformanceRow]


SNAPSHOT_SUMS = {
    "redemptions": Sum("redemptions"),
    "failed_redemptions": Sum("failed_redemptions"),
    "unique_users": Sum("unique_users"),
    "discount_total_usd": Sum("discount_total_usd"),
    "revenue_usd": Sum("revenue_usd"),
    "conversions": Sum("conversions"),
}


def _row(key: str, name: str, sums: dict) -> PerformanceRow:
    return PerformanceRow(
        key=key,
        name=name,
        redemptions=sums["redemptions"] or 0,
        failed_redemptions=sums["failed_redemptions"] or 0,
        unique_users=sums["unique_users"] or 0,
        discount_total_usd=sums["discount_total_usd"] or Decimal("0.00"),
        revenue_usd=sums["revenue_usd"] or Decimal("0.00"),
        conversions=sums["conversions"] or 0,
    )


def coupon_performance(*, date_from: date, date_to: date, campaign_id=None, coupon_id=None) -> PerformanceReport:
    """Redemptions, discount given, revenue after discount and conversions to paid, by coupon and
    by campaign, summed from the daily snapshots (`snapshot_coupon_analytics`) of the range.
    Unique users are summed per day: a user redeeming on two days counts twice."""
    snapshots = CouponAnalyticsSnapshot.objects.filter(snapshot_date__gte=date_from, snapshot_date__lte=date_to)
    if coupon_id is not None:
        snapshots = snapshots.filter(coupon_id=coupon_id)
    if campaign_id is not None:
        snapshots = snapshots.filter(coupon__campaign_links__campaign_id=campaign_id)
    by_coupon = [
        _row(str(sums.pop("coupon_id")), sums.pop("coupon__code"), sums)
        for sums in snapshots.values("coupon_id", "coupon__code").annotate(**SNAPSHOT_SUMS).order_by("coupon__code")
    ]
    by_campaign = [
        _row(str(sums.pop("coupon__campaign_links__campaign_id") or ""), sums.pop("campaign_name") or "", sums)
        for sums in snapshots.values("coupon__campaign_links__campaign_id")
        .annotate(campaign_name=Max("coupon__campaign_links__campaign__name"), **SNAPSHOT_SUMS)
        .order_by(F("campaign_name").asc(nulls_last=True))
    ]
    return PerformanceReport(
        date_from=date_from,
        date_to=date_to,
        totals=_row("", "all", snapshots.aggregate(**SNAPSHOT_SUMS)),
        by_coupon=by_coupon,
        by_campaign=by_campaign,
    )
