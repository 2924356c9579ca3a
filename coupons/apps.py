from django.apps import AppConfig


class CouponsConfig(AppConfig):
    name = "coupons"
    verbose_name = "Coupons and campaigns"

    def ready(self):
        from auditlog.registry import auditlog

        from coupons import services
        from subscriptions.discounts import discount_handlers_register

        discount_handlers_register(
            apply=services.coupon_checkout_hold,
            confirm=services.coupon_checkout_confirm,
            release=services.abandoned_checkout_release,
        )

        from coupons.models import (
            CampaignCoupon,
            Coupon,
            CouponCampaign,
            CouponFraudDetection,
            CouponRedemption,
            CouponUsageLimit,
            CouponValidationRule,
        )

        # Object history for the console. Analytics snapshots are rebuilt daily and are not tracked.
        for model in (
            CouponCampaign,
            Coupon,
            CampaignCoupon,
            CouponValidationRule,
            CouponFraudDetection,
            CouponRedemption,
            CouponUsageLimit,
        ):
            auditlog.register(model, exclude_fields=["updated_at"])
