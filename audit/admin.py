"""The audit trail in the console: read-only, plus sealing the chain on demand."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from audit.admin_base import ReadOnlyModelAdmin
from audit.admin_export import CsvExportMixin
from audit.models import AdminAuditLog, AuditChainHead
from audit.selectors import customer_id_of, reason_of
from audit.services import audit_chain_seal
from billing_project.admin_site import may_open_customer_page


@admin.register(AdminAuditLog)
class AdminAuditLogAdmin(CsvExportMixin, ReadOnlyModelAdmin):
    list_display = (
        "chain_position",
        "timestamp",
        "actor_email",
        "action",
        "resource_type",
        "resource_id",
        "customer",
        "reason",
        "status_code",
    )
    list_filter = ("action", "resource_type", "method", "status_code")
    search_fields = ("actor_email", "resource_type", "=resource_id", "endpoint")
    date_hierarchy = "timestamp"
    ordering = ("-timestamp", "-id")

    @admin.display(description="sequence", ordering="sequence")
    def chain_position(self, obj):
        return obj.position

    def get_list_display(self, request):
        """The customer links to their customer page for staff who may open it."""
        shown = super().get_list_display(request)
        if may_open_customer_page(request.user):
            return shown
        return ["customer_unlinked" if name == "customer" else name for name in shown]

    @admin.display(description="customer")
    def customer(self, obj):
        """The user the row is about: the resource itself, or the user its values name."""
        user_id = customer_id_of(obj)
        if user_id is None:
            return ""
        return format_html('<a href="{}">user {}</a>', reverse("admin:auth_user_customer", args=[user_id]), user_id)

    @admin.display(description="customer")
    def customer_unlinked(self, obj):
        user_id = customer_id_of(obj)
        return "" if user_id is None else f"user {user_id}"

    @admin.display(description="reason")
    def reason(self, obj):
        return reason_of(obj)


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
