from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from audit.api.filters import AdminAuditLogFilter
from audit.api.serializers import AdminAuditLogOutput, AuditChainSealOutput
from audit.models import AdminAuditLog
from audit.services import audit_chain_seal
from billing_project.auth import HasStaffPermission


class AdminAuditLogViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail, newest first (unsealed rows included). Read-only by construction: no route
    writes a row; `seal` only appends the committed rows to the hash chain."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["audit.view_adminauditlog"],
        "retrieve": ["audit.view_adminauditlog"],
        "seal": ["audit.change_auditchainhead"],
    }
    serializer_class = AdminAuditLogOutput
    filterset_class = AdminAuditLogFilter
    queryset = AdminAuditLog.objects.order_by("-timestamp", "-id")

    @extend_schema(request=None, responses={200: AuditChainSealOutput})
    @action(detail=False, methods=["post"], filterset_class=None, pagination_class=None)
    def seal(self, request):
        """Seals now the rows the beat job would seal within seconds (not itself an audited write:
        it changes no content, and verification covers what it does)."""
        return Response(AuditChainSealOutput(asdict(audit_chain_seal())).data)
