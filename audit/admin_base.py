"""Base classes for the Django admin console.

AuditedModelAdmin writes an AdminAuditLog row for every save and delete, inside the transaction
Django's admin already opens for the change, so the change and its record commit together, and links
each object's django-auditlog history. ReadOnlyModelAdmin is for ledgers, events and audit rows:
viewable, never editable.
"""

from urllib.parse import unquote

from auditlog.mixins import AuditlogHistoryAdminMixin
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils.text import capfirst

from audit.models import AuditAction
from audit.selectors import object_history
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


class UnifiedHistoryMixin:
    """The History button shows one history: the object's field changes (django-auditlog) and its
    hash-chained audit rows, together in time order."""

    def history_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.model._meta, object_id)
        if not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": f"History: {obj}",
            "subtitle": None,
            "entries": object_history(
                instance=obj,
                field_changes=request.user.has_perm("auditlog.view_logentry"),
                audit_rows=request.user.has_perm("audit.view_adminauditlog"),
            ),
            "module_name": str(capfirst(self.model._meta.verbose_name_plural)),
            "object": obj,
            "opts": self.model._meta,
            "preserved_filters": self.get_preserved_filters(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/unified_history.html", context)


class AuditedModelAdmin(AdminAuditMixin, UnifiedHistoryMixin, AuditlogHistoryAdminMixin, admin.ModelAdmin):
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


class ReadOnlyHistoryAdmin(UnifiedHistoryMixin, AuditlogHistoryAdminMixin, ReadOnlyModelAdmin):
    """Rows that only services change (balances, grants, redemptions): read-only, with their history."""

    show_auditlog_history_link = True
