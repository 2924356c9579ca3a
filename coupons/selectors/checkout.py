"""Coupons held by checkouts that were never paid."""

from datetime import datetime

from django.conf import settings

from coupons.models import CouponRedemption, RedemptionStatus


def abandoned_checkouts(*, now: datetime) -> list:
    return list(
        CouponRedemption.objects.filter(
            status=RedemptionStatus.PENDING, redemption_date__lt=now - settings.COUPON_CHECKOUT_HOLD
        ).values_list("pk", flat=True)
    )
