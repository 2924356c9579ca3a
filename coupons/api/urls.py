from django.urls import path
from rest_framework.routers import SimpleRouter

from coupons.api.views import (
    CouponPerformanceView,
    CouponRedeemView,
    CouponValidateView,
    FraudDetectionViewSet,
    StaffCampaignViewSet,
    StaffCouponViewSet,
)

router = SimpleRouter()
router.register("admin/coupons", StaffCouponViewSet, basename="admin-coupon")
router.register("admin/campaigns", StaffCampaignViewSet, basename="admin-campaign")
router.register("admin/fraud-detection", FraudDetectionViewSet, basename="admin-fraud-detection")

urlpatterns = [
    path("coupons/validate/", CouponValidateView.as_view(), name="coupon-validate"),
    path("coupons/redeem/", CouponRedeemView.as_view(), name="coupon-redeem"),
    path(
        "admin/analytics/coupon-performance/",
        CouponPerformanceView.as_view(),
        name="admin-coupon-performance",
    ),
    *router.urls,
]
