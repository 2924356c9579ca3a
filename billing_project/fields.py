"""Date and time fields of the API: DRF's, limited to years every computation can take.

Python's dates end at 0001-01-01 and 9999-12-31, so a day added to a `date_to` or a window taken
back from it overflows at the edges (a 500 where the caller deserves a 400 naming the field). No
billing date lies outside these bounds; every serializer of the project uses these fields
(billing_project/tests/test_conventions.py checks it).
"""

from datetime import UTC, date

from rest_framework import serializers

DATE_MIN = date(1000, 1, 1)
DATE_MAX = date(8999, 12, 31)
OUT_OF_RANGE = f"Must be between {DATE_MIN.isoformat()} and {DATE_MAX.isoformat()}."


class DateField(serializers.DateField):
    default_error_messages = {"out_of_range": OUT_OF_RANGE}

    def to_internal_value(self, value):
        parsed = super().to_internal_value(value)
        if not DATE_MIN <= parsed <= DATE_MAX:
            self.fail("out_of_range")
        return parsed


class DateTimeField(serializers.DateTimeField):
    default_error_messages = {"out_of_range": OUT_OF_RANGE}

    def to_internal_value(self, value):
        parsed = super().to_internal_value(value)  # aware (USE_TZ), in UTC
        if not DATE_MIN <= parsed.astimezone(UTC).date() <= DATE_MAX:
            self.fail("out_of_range")
        return parsed
