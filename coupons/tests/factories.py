from datetime import timedelta
from decimal import Decimal

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from billing_project.tests.factories import UserFactory
from coupons.models import (
    CampaignCoupon,
    Coupon,
    CouponAnalyticsSnapshot,
    CouponCampaign,
    CouponCodeGuess,
    CouponFraudDetection,
    CouponRedemption,
    CouponType,
    CouponUsageLimit,
    CouponValidationRule,
    DiscountType,
    FraudDetectionType,
    FraudSeverity,
    GuessChannel,
    RedemptionStatus,
    ValidationRuleType,
)


class CouponCampaignFactory(DjangoModelFactory):
    class Meta:
        model = CouponCampaign

    name = factory.Sequence(lambda n: f"Campaign {n}")
    starts_at = factory.LazyFunction(lambda: timezone.now() - timedelta(days=1))
    ends_at = factory.LazyAttribute(lambda o: o.starts_at + timedelta(days=30))
    budget_usd = Decimal("1000.00")
    created_by = factory.SubFactory(UserFactory, is_staff=True)


class CouponFactory(DjangoModelFactory):
    """A valid, active 20% coupon, one use per user."""

    class Meta:
        model = Coupon

    code = factory.Sequence(lambda n: f"TEST{n:04d}")
    coupon_type = CouponType.PERCENTAGE_DISCOUNT
    discount_type = DiscountType.PERCENTAGE
    discount_value = Decimal("20.00")
    valid_from = factory.LazyFunction(lambda: timezone.now() - timedelta(days=1))
    created_by = factory.SubFactory(UserFactory, is_staff=True)


class CampaignCouponFactory(DjangoModelFactory):
    class Meta:
        model = CampaignCoupon

    campaign = factory.SubFactory(CouponCampaignFactory)
    coupon = factory.SubFactory(CouponFactory)


class CouponRedemptionFactory(DjangoModelFactory):
    """A successful redemption of 20% off 19.00 USD. Use numbers are unique per coupon."""

    class Meta:
        model = CouponRedemption

    coupon = factory.SubFactory(CouponFactory)
    coupon_code = factory.SelfAttribute("coupon.code")
    user = factory.SubFactory(UserFactory)
    redemption_date = factory.LazyFunction(timezone.now)
    status = RedemptionStatus.SUCCESS
    use_number = factory.Sequence(lambda n: n + 1)
    user_use_number = 1
    original_amount_usd = Decimal("19.00")
    discount_applied_usd = Decimal("3.80")
    final_amount_usd = Decimal("15.20")
    ip_address = "203.0.113.10"
    user_agent = "pytest"
    device_fingerprint = factory.Faker("sha256")


class CouponUsageLimitFactory(DjangoModelFactory):
    class Meta:
        model = CouponUsageLimit

    coupon = factory.SubFactory(CouponFactory)


class CouponFraudDetectionFactory(DjangoModelFactory):
    class Meta:
        model = CouponFraudDetection

    coupon = factory.SubFactory(CouponFactory)
    user = factory.SubFactory(UserFactory)
    detection_type = FraudDetectionType.VELOCITY_USER
    severity = FraudSeverity.MEDIUM
    details = factory.Dict({"redemptions_last_hour": 4})
    ip_address = "203.0.113.10"
    detected_at = factory.LazyFunction(timezone.now)


class CouponValidationRuleFactory(DjangoModelFactory):
    class Meta:
        model = CouponValidationRule

    coupon = factory.SubFactory(CouponFactory)
    rule_type = ValidationRuleType.FIRST_TIME_USER
    rule_value = factory.Dict({"required": True})


class CouponAnalyticsSnapshotFactory(DjangoModelFactory):
    class Meta:
        model = CouponAnalyticsSnapshot

    coupon = factory.SubFactory(CouponFactory)
    snapshot_date = factory.LazyFunction(timezone.localdate)
    redemptions = 3
    unique_users = 3
    discount_total_usd = Decimal("11.40")
    revenue_usd = Decimal("45.60")
    conversions = 2


class CouponCodeGuessFactory(DjangoModelFactory):
    class Meta:
        model = CouponCodeGuess

    user = factory.SubFactory(UserFactory)
    ip_address = "203.0.113.10"
    code = factory.Sequence(lambda n: f"GUESS{n}")
    channel = GuessChannel.VALIDATE
    tried_at = factory.LazyFunction(timezone.now)
