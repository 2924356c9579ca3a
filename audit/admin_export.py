"""CSV export of a console list, as filtered (django-import-export, export only).

The list's Export link carries its filters, search and date drill-down, and the file holds exactly
the rows the list shows. Exporting needs the model's view permission (IMPORT_EXPORT_EXPORT_PERMISSION_CODE),
and each export writes an `export` audit row naming who, which model, the filters and the row count.
"""

from import_export.admin import ExportMixin
from import_export.formats.base_formats import CSV

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of


class CsvExportMixin(ExportMixin):
    export_formats = [CSV]
    # One format, every column: the Export link downloads the file at once.
    skip_export_form = True

    def get_data_for_export(self, request, queryset, **kwargs):
        data = super().get_data_for_export(request, queryset, **kwargs)
        audit_record(
            action=AuditAction.EXPORT,
            resource_type=resource_type_of(self.model),
            new_value={"format": "csv", "filters": request.GET.dict(), "rows": len(data)},
            request=request,
        )
        return data
