"""Base classes for the Django admin console.

AuditedModelAdmin writes an AdminAuditLog row for every save and delete, inside the transaction
Django's admin already opens for the change, so the change and its record commit together, and links
each object's django-auditlog history. ReadOnlyModelAdmin is for ledgers, events and audit rows:
viewable, never editable.
"""

from auditlog.mixins import AuditlogHistoryAdminMixin
from django.contrib import admin

from audit.models import AuditAction
from audit.services import audit_model_change, snapshot


class AdminAuditMixin:
    """Audits the console's saves and deletes of a ModelAdmin."""

    def save_model(self, request, obj, form, change):
        previous = snapshot(type(obj)._default_manager.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        audit_model_change(
            action=AuditAction.UPDATE if change else AuditAction.CREATE,
            instance=obj,
            previous_value=previous,
            request=request,
        )

    def delete_model(self, request, obj):
        previous = snapshot(obj)
        pk = obj.pk
        super().delete_model(request, obj)
        obj.pk = pk
        audit_model_change(action=AuditAction.DELETE, instance=obj, previous_value=previous, request=request)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


class CreatorStampAdminMixin:
    """Records the admin who adds a row in its `created_by`."""

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


class AuditedModelAdmin(AdminAuditMixin, AuditlogHistoryAdminMixin, admin.ModelAdmin):
    """An editable business table, audited, with its object history one click away."""

    show_auditlog_history_link = True


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """A ledger, event or audit table: every column shown, nothing editable.

    The tables are large, so the changelist skips counting all rows.
    """

    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyHistoryAdmin(AuditlogHistoryAdminMixin, ReadOnlyModelAdmin):
    """Rows that only services change (balances, grants, redemptions): read-only, with their history."""

    show_auditlog_history_link = True
