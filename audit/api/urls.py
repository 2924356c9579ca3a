from rest_framework.routers import SimpleRouter

from audit.api.views import AdminAuditLogViewSet, PaymentEventViewSet

router = SimpleRouter()
router.register("admin/audit-logs", AdminAuditLogViewSet, basename="admin-audit-log")
router.register("admin/payment-events", PaymentEventViewSet, basename="admin-payment-event")

urlpatterns = router.urls
