from django.urls import path
from rest_framework.routers import SimpleRouter

from payments.api import views

router = SimpleRouter()
router.register("admin/payment-events", views.PaymentEventViewSet, basename="admin-payment-event")
router.register("admin/payment-operations", views.PaymentOperationViewSet, basename="admin-payment-operation")
router.register("admin/payments/unmatched", views.UnmatchedWebhookEventViewSet, basename="admin-payment-unmatched")

# Mounted first and unnested by billing_project.urls: Stripe's redeliveries are answered in well
# under a millisecond, of which walking the other apps' patterns took a sixth.
webhook_urlpatterns = [
    path("billing/webhooks/stripe/", views.StripeWebhookView.as_view(), name="stripe-webhook"),
]

urlpatterns = [
    path("billing/portal/", views.BillingPortalView.as_view(), name="billing-portal"),
    path("billing/portal/offline/", views.OfflinePortalView.as_view(), name="billing-portal-offline"),
    *router.urls,
]
