"""List filters whose values the database could not take as given: a user id beyond the id column's
range, or a timestamp with an offset PostgreSQL refuses. Out-of-range input is a 400, not a 500."""

from datetime import UTC

import django_filters
from django import forms

USER_ID_MAX = 2**31 - 1  # auth_user.id is a 32-bit integer


class UserIdFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", USER_ID_MAX)
        super().__init__(*args, **kwargs)


class UtcDateTimeFromToRangeFilter(django_filters.IsoDateTimeFromToRangeFilter):
    """`<name>_after` / `<name>_before` in ISO 8601, compared in UTC whatever offset they carry."""

    def filter(self, qs, value):
        if value:
            try:
                value = slice(*(bound.astimezone(UTC) if bound else bound for bound in (value.start, value.stop)))
            except OverflowError:
                raise forms.ValidationError("A time is out of range.", code="invalid") from None
        return super().filter(qs, value)
