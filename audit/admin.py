"""The audit trail in the console: read-only."""

from django.contrib import admin

from audit.admin_base import ReadOnlyModelAdmin
from audit.models import AdminAuditLog, AuditChainHead, PaymentEvent


@admin.register(AdminAuditLog)
class AdminAuditLogAdmin(ReadOnlyModelAdmin):
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


@admin.register(PaymentEvent)
class PaymentEventAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "event_type", "user", "plan_code", "amount", "currency", "invoice_id")
    list_filter = ("event_type",)
    list_select_related = ("user",)
    search_fields = ("user__email", "customer_id", "invoice_id", "subscription_id", "=id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
