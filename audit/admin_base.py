"""Base classes for the Django admin console.

AuditedModelAdmin writes an AdminAuditLog row for every save and delete, inside the transaction
Django's admin already opens for the change, so the change and its record commit together.
ReadOnlyModelAdmin is for ledgers, events and audit rows: viewable, never editable.
"""

from django.contrib import admin

from audit.models import AuditAction
from audit.services import audit_model_change, snapshot


class AuditedModelAdmin(admin.ModelAdmin):
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


class ReadOnlyModelAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
