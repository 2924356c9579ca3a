"""CSV export of a console list, as filtered (django-import-export, export only).

The list's Export link carries its filters, search and date drill-down, and the file holds exactly
the rows the list shows. Each link to a user (`user`, `actor` ...) is exported as its id and, in a
column named `<link>_email`, the user's e-mail address, which is what staff search by. Exporting
needs the model's view permission (IMPORT_EXPORT_EXPORT_PERMISSION_CODE),
and each export writes an `export` audit row naming who, which model, the filters and the row count.
"""

from django.conf import settings
from import_export.admin import ExportMixin
from import_export.fields import Field
from import_export.formats.base_formats import CSV
from import_export.resources import modelresource_factory

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of


def _user_links(model) -> list[str]:
    """The model's links to a user that have no e-mail column of their own (the audit log keeps
    `actor_email` itself)."""
    names = {field.name for field in model._meta.fields}
    return [
        field.name
        for field in model._meta.fields
        if field.many_to_one
        and field.related_model._meta.label == settings.AUTH_USER_MODEL
        and f"{field.name}_email" not in names
    ]


class CsvExportMixin(ExportMixin):
    export_formats = [CSV]
    # One format, every column: the Export link downloads the file at once.
    skip_export_form = True

    def get_export_resource_classes(self, request):
        emails = {
            f"{link}_email": Field(attribute=f"{link}__email", column_name=f"{link}_email", readonly=True)
            for link in _user_links(self.model)
        }
        return [modelresource_factory(self.model, custom_fields=emails)]

    def get_export_queryset(self, request):
        return super().get_export_queryset(request).select_related(*_user_links(self.model))

    def get_data_for_export(self, request, queryset, **kwargs):
        data = super().get_data_for_export(request, queryset, **kwargs)
        audit_record(
            action=AuditAction.EXPORT,
            resource_type=resource_type_of(self.model),
            new_value={"format": "csv", "filters": request.GET.dict(), "rows": len(data)},
            request=request,
        )
        return data
