"""The audit trail in the console: read-only."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from audit.admin_base import ReadOnlyModelAdmin
from audit.admin_export import CsvExportMixin
from audit.models import AdminAuditLog, AuditChainHead
from audit.selectors import customer_id_of, reason_of


@admin.register(AdminAuditLog)
class AdminAuditLogAdmin(CsvExportMixin, ReadOnlyModelAdmin):
    list_display = (
        "sequence",
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

    @admin.display(description="customer")
    def customer(self, obj):
        """The user the row is about: the resource itself, or the user its values name."""
        user_id = customer_id_of(obj)
        if user_id is None:
            return ""
        return format_html('<a href="{}">user {}</a>', reverse("admin:auth_user_customer", args=[user_id]), user_id)

    @admin.display(description="reason")
    def reason(self, obj):
        return reason_of(obj)


@admin.register(AuditChainHead)
class AuditChainHeadAdmin(ReadOnlyModelAdmin):
    list_display = ("chain", "sequence", "row_hash", "updated_at")
