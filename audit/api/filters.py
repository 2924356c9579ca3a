import django_filters

from audit.models import AdminAuditLog, AuditAction, PaymentEvent


class AdminAuditLogFilter(django_filters.FilterSet):
    actor = django_filters.NumberFilter(field_name="actor_id")
    actor_email = django_filters.CharFilter(lookup_expr="iexact")
    resource_type = django_filters.CharFilter()
    resource_id = django_filters.CharFilter()
    action = django_filters.ChoiceFilter(choices=AuditAction.choices)
    timestamp = django_filters.IsoDateTimeFromToRangeFilter(help_text="timestamp_after / timestamp_before (ISO 8601)")

    class Meta:
        model = AdminAuditLog
        fields = ["actor", "actor_email", "resource_type", "resource_id", "action", "timestamp"]


class PaymentEventFilter(django_filters.FilterSet):
    user = django_filters.NumberFilter(field_name="user_id")
    event_type = django_filters.CharFilter()
    created_at = django_filters.IsoDateTimeFromToRangeFilter()

    class Meta:
        model = PaymentEvent
        fields = ["user", "event_type", "created_at"]
