import django_filters

from audit.models import AdminAuditLog, AuditAction
from billing_project.filters import UserIdFilter, UtcDateTimeFromToRangeFilter


class AdminAuditLogFilter(django_filters.FilterSet):
    actor = UserIdFilter(field_name="actor_id")
    actor_email = django_filters.CharFilter(lookup_expr="iexact")
    resource_type = django_filters.CharFilter()
    resource_id = django_filters.CharFilter()
    action = django_filters.ChoiceFilter(choices=AuditAction.choices)
    timestamp = UtcDateTimeFromToRangeFilter(help_text="timestamp_after / timestamp_before (ISO 8601)")

    class Meta:
        model = AdminAuditLog
        fields = ["actor", "actor_email", "resource_type", "resource_id", "action", "timestamp"]
