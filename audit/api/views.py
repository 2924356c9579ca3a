from rest_framework import viewsets

from audit.api.filters import AdminAuditLogFilter
from audit.api.serializers import AdminAuditLogOutput
from audit.models import AdminAuditLog
from billing_project.auth import HasStaffPermission


class AdminAuditLogViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail, newest first. Read-only by construction: no write route exists."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {"list": ["audit.view_adminauditlog"], "retrieve": ["audit.view_adminauditlog"]}
    serializer_class = AdminAuditLogOutput
    filterset_class = AdminAuditLogFilter
    queryset = AdminAuditLog.objects.order_by("-sequence")
