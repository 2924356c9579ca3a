import django_filters

from billing_project.filters import UserIdFilter
from coupons.models import (
    Coupon,
    CouponCampaign,
    CouponFraudDetection,
    CouponType,
    DiscountType,
    FraudDetectionType,
    FraudSeverity,
)


class StaffCouponFilter(django_filters.FilterSet):
    coupon_type = django_filters.ChoiceFilter(choices=CouponType.choices)
    discount_type = django_filters.ChoiceFilter(choices=DiscountType.choices)
    is_active = django_filters.BooleanFilter()
    deleted = django_filters.BooleanFilter(field_name="deleted_at", lookup_expr="isnull", exclude=True)
    campaign = django_filters.UUIDFilter(field_name="campaign_links__campaign_id")
    code = django_filters.CharFilter(field_name="code", lookup_expr="icontains")

    class Meta:
        model = Coupon
        fields = ["coupon_type", "discount_type", "is_active", "deleted", "campaign", "code"]


class StaffCampaignFilter(django_filters.FilterSet):
    is_active = django_filters.BooleanFilter()
    name = django_filters.CharFilter(field_name="name", lookup_expr="icontains")

    class Meta:
        model = CouponCampaign
        fields = ["is_active", "name"]


class FraudDetectionFilter(django_filters.FilterSet):
    detection_type = django_filters.ChoiceFilter(choices=FraudDetectionType.choices)
    severity = django_filters.ChoiceFilter(choices=FraudSeverity.choices)
    is_flagged = django_filters.BooleanFilter()
    resolved = django_filters.BooleanFilter(field_name="resolved_at", lookup_expr="isnull", exclude=True)
    user = UserIdFilter(field_name="user_id")
    coupon = django_filters.UUIDFilter(field_name="coupon_id")

    class Meta:
        model = CouponFraudDetection
        fields = ["detection_type", "severity", "is_flagged", "resolved", "user", "coupon"]
