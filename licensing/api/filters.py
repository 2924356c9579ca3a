import django_filters

from billing_project.filters import UserIdFilter
from licensing.keys import key_normalize
from licensing.models import LicenseStatus, PerpetualLicense


class StaffLicenseFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=LicenseStatus.choices)
    byok_enabled = django_filters.BooleanFilter()
    user = UserIdFilter(field_name="user_id")
    search = django_filters.CharFilter(
        method="filter_search", help_text="Part of a license key (e.g. the last group a customer reads out)."
    )

    class Meta:
        model = PerpetualLicense
        fields = ["status", "byok_enabled", "user", "search"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(license_key__contains=key_normalize(value))
