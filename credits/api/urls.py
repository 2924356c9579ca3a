from django.urls import path
from rest_framework.routers import SimpleRouter

from credits.api import recharge_views, views

router = SimpleRouter()
router.register("admin/providers", views.ProviderViewSet, basename="admin-provider")
router.register("admin/model-pricing", views.ModelPriceViewSet, basename="admin-model-pricing")
router.register("admin/pricing-configs", views.PricingConfigViewSet, basename="admin-pricing-config")
router.register("admin/credit-packs", views.CreditPackViewSet, basename="admin-credit-pack")

urlpatterns = [
    path("usage/record/", views.UsageRecordView.as_view(), name="usage-record"),
    path("usage/record-batch/", views.UsageRecordBatchView.as_view(), name="usage-record-batch"),
    path("usage/check/", views.UsageCheckView.as_view(), name="usage-check"),
    path("usage/reserve/", views.UsageReserveView.as_view(), name="usage-reserve"),
    path("usage/release/", views.UsageReleaseView.as_view(), name="usage-release"),
    path("me/credits/", views.MeCreditsView.as_view(), name="me-credits"),
    path("me/credits/budget/", views.MeCreditsBudgetView.as_view(), name="me-credits-budget"),
    path("credits/packs/", views.CreditPackListView.as_view(), name="credit-packs"),
    path("credits/purchase/", views.CreditPackPurchaseView.as_view(), name="credit-pack-purchase"),
    path("me/usage/", views.MeUsageView.as_view(), name="me-usage"),
    path("me/usage/daily/", views.MeUsageDailyView.as_view(), name="me-usage-daily"),
    path("me/credits/auto-recharge/", recharge_views.MeAutoRechargeView.as_view(), name="me-auto-recharge"),
    path(
        "admin/credits/auto-recharge/<int:user_id>/",
        recharge_views.StaffAutoRechargeView.as_view(),
        name="admin-auto-recharge",
    ),
    path("admin/credits/grant/", views.StaffCreditGrantView.as_view(), name="admin-credit-grant"),
    path("admin/credits/budget/<int:user_id>/", views.StaffCreditBudgetView.as_view(), name="admin-credit-budget"),
    path("admin/credits/deductions/", views.StaffDeductionListView.as_view(), name="admin-deductions"),
    path(
        "admin/credits/deductions/<uuid:deduction_id>/reverse/",
        views.StaffDeductionReverseView.as_view(),
        name="admin-deduction-reverse",
    ),
    *router.urls,
]
