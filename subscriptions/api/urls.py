from django.urls import path
from rest_framework.routers import SimpleRouter

from subscriptions.api import views

router = SimpleRouter()
router.register("admin/subscriptions", views.StaffSubscriptionViewSet, basename="admin-subscription")

urlpatterns = [
    path("auth/register/", views.RegisterView.as_view(), name="auth-register"),
    path("me/", views.MeView.as_view(), name="me"),
    path("tiers/", views.TierListView.as_view(), name="tier-list"),
    path("subscriptions/", views.SubscriptionStartView.as_view(), name="subscription-start"),
    path(
        "subscriptions/<uuid:subscription_id>/change-tier/preview/",
        views.TierChangePreviewView.as_view(),
        name="subscription-change-tier-preview",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/change-tier/",
        views.TierChangeView.as_view(),
        name="subscription-change-tier",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/cancel/",
        views.SubscriptionCancelView.as_view(),
        name="subscription-cancel",
    ),
    path("me/subscription/", views.MySubscriptionView.as_view(), name="my-subscription"),
    path("me/entitlements/", views.MyEntitlementsView.as_view(), name="my-entitlements"),
    path("me/invoices/", views.MyInvoiceListView.as_view(), name="my-invoices"),
    path(
        "admin/payments/<uuid:payment_id>/refund/", views.StaffPaymentRefundView.as_view(), name="admin-payment-refund"
    ),
    *router.urls,
]
