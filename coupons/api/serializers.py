"""Shapes of the coupon endpoints. The rules (validation order, effects, limits) live in the services."""

from rest_framework import serializers

from billing_project.enums import BillingCycle, SubscriptionTier
from billing_project.fields import DateField, DateTimeField
from coupons.models import (
    CampaignCoupon,
    Coupon,
    CouponCampaign,
    CouponFraudDetection,
    CouponRedemption,
    CouponType,
    DiscountType,
)


def money_field(**kwargs):
    return serializers.DecimalField(max_digits=12, decimal_places=2, **kwargs)


class CouponQuestionInput(serializers.Serializer):
    code = serializers.CharField(max_length=50)
    tier = serializers.ChoiceField(choices=SubscriptionTier.choices, required=False)
    billing_cycle = serializers.ChoiceField(choices=BillingCycle.choices, required=False)
    amount_usd = money_field(min_value=0, required=False, help_text="The purchase a discount would apply to.")
    device_fingerprint = serializers.CharField(max_length=128, required=False, default="", allow_blank=True)


class DiscountPreviewOutput(serializers.Serializer):
    original_amount_usd = money_field()
    discount_usd = money_field()
    final_amount_usd = money_field()
    credits = serializers.IntegerField()
    months_free = serializers.IntegerField()
    license = serializers.BooleanField(help_text="Redeeming grants a perpetual license.")


class CouponValidateOutput(serializers.Serializer):
    valid = serializers.BooleanField()
    reason_code = serializers.CharField(allow_null=True)
    discount_preview = DiscountPreviewOutput()


class RedeemOutput(serializers.Serializer):
    redemption_id = serializers.UUIDField(source="pk")
    status = serializers.CharField()
    original_amount_usd = money_field()
    discount_applied_usd = money_field()
    final_amount_usd = money_field()
    credits_granted = serializers.IntegerField()
    months_granted = serializers.IntegerField()
    license_key = serializers.SerializerMethodField(help_text="The granted license's key, in full, to its owner.")
    subscription_id = serializers.UUIDField(allow_null=True)

    def get_license_key(self, redemption) -> str | None:
        return redemption.license_granted.license_key if redemption.license_granted_id else None


# Staff


class CouponOutput(serializers.ModelSerializer):
    campaign_id = serializers.SerializerMethodField()
    total_uses = serializers.IntegerField(source="usage.total_uses", default=0, read_only=True)

    class Meta:
        model = Coupon
        fields = [
            "id",
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
            "campaign_id",
            "total_uses",
            "created_by",
            "created_at",
            "updated_at",
            "deleted_at",
            "deleted_by",
        ]

    def get_campaign_id(self, coupon) -> str | None:
        links = list(coupon.campaign_links.all())
        return str(links[0].campaign_id) if links else None


class CouponTemplateFields(serializers.Serializer):
    """The fields a staff member sets on a coupon."""

    # Shape rules (which discount type goes with which coupon type, ...) are the model's: Coupon.clean.

    description = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    coupon_type = serializers.ChoiceField(choices=CouponType.choices)
    discount_type = serializers.ChoiceField(choices=DiscountType.choices, required=False, allow_blank=True, default="")
    discount_value = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, default=0)
    applicable_tiers = serializers.ListField(
        child=serializers.ChoiceField(choices=SubscriptionTier.choices), required=False, default=list
    )
    applicable_billing_cycles = serializers.ListField(
        child=serializers.ChoiceField(choices=BillingCycle.choices), required=False, default=list
    )
    min_purchase_usd = money_field(min_value=0, required=False, allow_null=True)
    new_customers_only = serializers.BooleanField(required=False, default=False)
    valid_from = DateTimeField(required=False, help_text="Now by default.")
    valid_until = DateTimeField(required=False, allow_null=True)
    max_uses_per_user = serializers.IntegerField(min_value=1, required=False, default=1)


class CouponInput(CouponTemplateFields):
    code = serializers.CharField(max_length=50)
    max_uses = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    is_active = serializers.BooleanField(required=False, default=True)
    campaign_id = serializers.UUIDField(required=False, help_text="Attach the new coupon to this campaign.")


class CouponUpdateInput(CouponInput):
    """Every field optional: only those sent change."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields.pop("campaign_id")
        for field in self.fields.values():
            field.required = False
            field.default = serializers.empty


class RedemptionOutput(serializers.ModelSerializer):
    user_email = serializers.EmailField(source="user.email", default=None, read_only=True)

    class Meta:
        model = CouponRedemption
        fields = [
            "id",
            "coupon",
            "coupon_code",
            "user",
            "user_email",
            "subscription",
            "campaign",
            "redemption_date",
            "status",
            "failure_reason",
            "original_amount_usd",
            "discount_applied_usd",
            "final_amount_usd",
            "credits_granted",
            "months_granted",
            "license_granted",
            "license_granted_at",
            "ip_address",
            "device_fingerprint",
        ]


class CampaignOutput(serializers.ModelSerializer):
    coupon_count = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = CouponCampaign
        fields = [
            "id",
            "name",
            "description",
            "starts_at",
            "ends_at",
            "budget_usd",
            "spent_usd",
            "is_active",
            "coupon_count",
            "created_by",
            "created_at",
            "updated_at",
        ]


class CampaignInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    starts_at = DateTimeField()
    ends_at = DateTimeField()
    budget_usd = money_field(min_value=0, required=False, allow_null=True, help_text="Empty: no budget cap.")
    is_active = serializers.BooleanField(required=False, default=True)


class CampaignUpdateInput(CampaignInput):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False
            field.default = serializers.empty


class CampaignCouponInput(serializers.Serializer):
    coupon_id = serializers.UUIDField()


class CampaignCouponOutput(serializers.ModelSerializer):
    class Meta:
        model = CampaignCoupon
        fields = ["id", "campaign", "coupon", "created_at"]


class GenerateCouponsInput(CouponTemplateFields):
    count = serializers.IntegerField(min_value=1)
    prefix = serializers.RegexField(r"^[A-Za-z0-9-]{0,20}$", required=False, default="")


class GenerateCouponsOutput(serializers.Serializer):
    campaign_id = serializers.UUIDField()
    count = serializers.IntegerField()
    codes = serializers.ListField(child=serializers.CharField())


class FraudDetectionOutput(serializers.ModelSerializer):
    coupon_code = serializers.CharField(source="coupon.code", default=None, read_only=True)
    user_email = serializers.EmailField(source="user.email", default=None, read_only=True)

    class Meta:
        model = CouponFraudDetection
        fields = [
            "id",
            "coupon",
            "coupon_code",
            "user",
            "user_email",
            "redemption",
            "detection_type",
            "severity",
            "details",
            "ip_address",
            "device_fingerprint",
            "is_flagged",
            "detected_at",
            "resolved_at",
            "resolved_by",
            "resolution",
        ]


class ResolveInput(serializers.Serializer):
    resolution = serializers.CharField(max_length=2000)


class PerformanceQuery(serializers.Serializer):
    date_from = DateField()
    date_to = DateField()
    campaign_id = serializers.UUIDField(required=False)
    coupon_id = serializers.UUIDField(required=False)

    def validate(self, attrs):
        if attrs["date_from"] > attrs["date_to"]:
            raise serializers.ValidationError({"date_to": "date_to is before date_from."})
        if (attrs["date_to"] - attrs["date_from"]).days > 366:
            raise serializers.ValidationError({"date_to": "A report covers at most 366 days."})
        return attrs


class CurrencyMoneyOutput(serializers.Serializer):
    discount_total = money_field(help_text="Discount given, in this currency.")
    revenue = money_field(help_text="Revenue after discount, in this currency.")


class PerformanceRowOutput(serializers.Serializer):
    key = serializers.CharField(help_text="The coupon's or campaign's id; empty for the totals or no campaign.")
    name = serializers.CharField()
    redemptions = serializers.IntegerField()
    failed_redemptions = serializers.IntegerField()
    unique_users = serializers.IntegerField()
    discount_total_usd = money_field(help_text="USD redemptions only (another currency is never converted).")
    revenue_usd = money_field(help_text="USD redemptions only (another currency is never converted).")
    by_currency = serializers.DictField(
        child=CurrencyMoneyOutput(),
        help_text="Every currency's figures by ISO 4217 code (lower case), never converted.",
    )
    conversions = serializers.IntegerField()
    conversion_rate = serializers.DecimalField(max_digits=6, decimal_places=4)


class PerformanceOutput(serializers.Serializer):
    date_from = serializers.DateField()
    date_to = serializers.DateField()
    totals = PerformanceRowOutput()
    by_coupon = PerformanceRowOutput(many=True)
    by_campaign = PerformanceRowOutput(many=True)
