from rest_framework.routers import SimpleRouter

from billing_project.webhooks_api import StaffWebhookEndpointViewSet

router = SimpleRouter()
router.register("admin/webhook-endpoints", StaffWebhookEndpointViewSet, basename="admin-webhook-endpoint")

urlpatterns = router.urls
