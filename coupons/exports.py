from billing_project.gdpr import export_section
from coupons.models import CouponRedemption


@export_section("coupon_redemptions")
def redemptions_of(user) -> list:
    return list(CouponRedemption.objects.filter(user=user).values())
