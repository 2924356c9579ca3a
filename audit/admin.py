"""The audit trail in the console: read-only."""

from django.contrib import admin

from audit.admin_base import ReadOnlyModelAdmin
from audit.admin_export import CsvExportMixin
from audit.models import AdminAuditLog, AuditChainHead


@admin.register(AdminAuditLog)
class AdminAuditLogAdmin(CsvExportMixin, ReadOnlyModelAdmin):
    list_display = (
        "sequence",
        "timestamp",
        "actor_email",
        "action",
        "resource_type",
        "resource_id",
        "method",
        "status_code",
    )
    list_filter = ("action", "resource_type", "method", "status_code")
    search_fields = ("actor_email", "resource_type", "=resource_id", "endpoint")
    date_hierarchy = "timestamp"


@admin.register(AuditChainHead)
class AuditChainHeadAdmin(ReadOnlyModelAdmin):
    list_display = ("chain", "sequence", "row_hash", "updated_at")
