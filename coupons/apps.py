from django.apps import AppConfig


class CouponsConfig(AppConfig):
    name = "coupons"
    verbose_name = "Coupons and campaigns"

    def ready(self):
        from audit.history import history_track
        from coupons.services.checkout import (
            abandoned_checkout_release,
            coupon_checkout_confirm,
            coupon_checkout_hold,
        )
        from subscriptions.discounts import discount_handlers_register

        discount_handlers_register(
            apply=coupon_checkout_hold,
            confirm=coupon_checkout_confirm,
            release=abandoned_checkout_release,
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
            history_track(model)
