import django_filters

from billing_project.filters import UserIdFilter, UtcDateTimeFromToRangeFilter
from payments.models import OperationKind, OperationState, PaymentEvent, PaymentOperation


class PaymentEventFilter(django_filters.FilterSet):
    user = UserIdFilter(field_name="user_id")
    event_type = django_filters.CharFilter()
    created_at = UtcDateTimeFromToRangeFilter()

    class Meta:
        model = PaymentEvent
        fields = ["user", "event_type", "created_at"]


class PaymentOperationFilter(django_filters.FilterSet):
    user = UserIdFilter(field_name="user_id")
    kind = django_filters.ChoiceFilter(choices=OperationKind.choices)
    state = django_filters.ChoiceFilter(choices=OperationState.choices)
    created_at = UtcDateTimeFromToRangeFilter()

    class Meta:
        model = PaymentOperation
        fields = ["user", "kind", "state", "created_at"]
