"""The audit trail in the console: read-only, plus sealing the chain on demand."""

from django.contrib import admin, messages

from audit.admin_base import ReadOnlyModelAdmin
from audit.models import AdminAuditLog, AuditChainHead
from audit.services import audit_chain_seal


@admin.register(AdminAuditLog)
class AdminAuditLogAdmin(ReadOnlyModelAdmin):
    list_display = (
        "chain_position",
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
    ordering = ("-timestamp", "-id")

    @admin.display(description="sequence", ordering="sequence")
    def chain_position(self, obj):
        return obj.position


@admin.action(description="Seal the audit chain now (append every committed unsealed row)", permissions=["seal"])
def seal_audit_chain(modeladmin, request, queryset):
    result = audit_chain_seal()
    modeladmin.message_user(
        request, f"Sealed {result.sealed} rows; the chain ends at #{result.head_sequence}.", messages.SUCCESS
    )


@admin.register(AuditChainHead)
class AuditChainHeadAdmin(ReadOnlyModelAdmin):
    list_display = ("chain", "sequence", "row_hash", "updated_at")
    actions = [seal_audit_chain]

    def has_seal_permission(self, request):
        return request.user.has_perm("audit.change_auditchainhead")
