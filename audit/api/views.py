from rest_framework import viewsets

from audit.api.filters import AdminAuditLogFilter, PaymentEventFilter
from audit.api.serializers import AdminAuditLogOutput, PaymentEventOutput
from audit.models import AdminAuditLog, PaymentEvent
from billing_project.auth import HasStaffPermission
from billing_project.roles import PAYMENT_EVENT_MODEL, VIEW, permission_name


class AdminAuditLogViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail, newest first. Read-only by construction: no write route exists."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {"list": ["audit.view_adminauditlog"], "retrieve": ["audit.view_adminauditlog"]}
    serializer_class = AdminAuditLogOutput
    filterset_class = AdminAuditLogFilter
    queryset = AdminAuditLog.objects.order_by("-sequence")


class PaymentEventViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": [permission_name(PAYMENT_EVENT_MODEL, VIEW)],
        "retrieve": [permission_name(PAYMENT_EVENT_MODEL, VIEW)],
    }
    serializer_class = PaymentEventOutput
    filterset_class = PaymentEventFilter
    queryset = PaymentEvent.objects.order_by("-created_at")
