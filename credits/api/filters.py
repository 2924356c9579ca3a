import django_filters

from billing_project.filters import UserIdFilter, UtcDateTimeFromToRangeFilter
from credits.models import CreditDeductionLedger, DeductionReason


class StaffDeductionFilter(django_filters.FilterSet):
    user = UserIdFilter(field_name="user_id")
    created_at = UtcDateTimeFromToRangeFilter(help_text="created_at_after / created_at_before (ISO 8601)")
    provider = django_filters.CharFilter(field_name="usage__provider__name", help_text="The provider's name.")
    model = django_filters.CharFilter(field_name="usage__model_name", help_text="The model's name.")
    reason = django_filters.ChoiceFilter(choices=DeductionReason.choices)

    class Meta:
        model = CreditDeductionLedger
        fields = ["user", "created_at", "provider", "model", "reason"]
