"""Parsing a usage event from JSON, fast.

A batch carries up to 1,000 events, and DRF's serializer validation costs about half a millisecond
per event on a small machine, more than recording the event itself. This parser applies the same rules
as `UsageEventInput` (which stays the schema the API documents; a test keeps the two in step) and
reports errors per field the same way.
"""

import uuid
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing_project.fields import DATE_MAX, DATE_MIN, OUT_OF_RANGE
from billing_project.parsers import text_problems
from credits import usage_objects
from credits.models import RequestType, ServiceTier, UsageFormat
from credits.services import UsageEvent
from credits.usage_objects import MAX_TOKENS, TOTALS, TokenBreakdown

REQUIRED = "This field is required."
REQUEST_TYPES = frozenset(RequestType.values)
SERVICE_TIERS = frozenset(ServiceTier.values)
USAGE_FORMATS = frozenset(UsageFormat.values)
TOKENS = {"minimum": 0, "maximum": MAX_TOKENS}
# Long enough for any batch job; processing_time_ms is 64-bit, so this bounds meaning, not storage.
MAX_DURATION = timedelta(days=31)
# The fields of an event the API documents (credits.api.serializers.UsageEventInput).
FIELDS = frozenset(
    {
        "request_id",
        "user_id",
        "provider",
        "model",
        "request_type",
        "request_started_at",
        "request_completed_at",
        "usage_format",
        "usage",
        "service_tier",
        "fee_units",
        "hold_id",
        "streaming_segments",
        "region",
        *usage_objects.FLAT_FIELDS,
    }
)


class _Errors(dict):
    def add(self, field: str, message: str) -> None:
        self.setdefault(field, []).append(message)


def _uuid(raw: dict, name: str, errors: _Errors, *, required: bool = True):
    value = raw.get(name)
    if value is None:
        if required:
            errors.add(name, REQUIRED if name not in raw else "This field may not be null.")
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        errors.add(name, "Must be a valid UUID.")
        return None


def _integer(raw: dict, name: str, errors: _Errors, *, minimum: int, maximum: int, default=REQUIRED):
    value = raw.get(name, default)
    if value is REQUIRED:
        errors.add(name, REQUIRED)
        return None
    if value is None:
        if default is None:
            return None
        errors.add(name, "This field may not be null.")
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        errors.add(name, "A valid integer is required.")
        return None
    try:
        number = int(value)
    except ValueError:
        errors.add(name, "A valid integer is required.")
        return None
    if number < minimum:
        errors.add(name, f"Ensure this value is greater than or equal to {minimum}.")
    elif number > maximum:
        errors.add(name, f"Ensure this value is less than or equal to {maximum}.")
    return number


def _text(raw: dict, name: str, errors: _Errors, *, max_length: int, required: bool = True) -> str:
    value = raw.get(name)
    if value is None:
        if required:
            errors.add(name, REQUIRED if name not in raw else "This field may not be null.")
        return ""
    if not isinstance(value, str):
        errors.add(name, "Not a valid string.")
        return ""
    value = value.strip()
    if required and not value:
        errors.add(name, "This field may not be blank.")
    elif len(value) > max_length:
        errors.add(name, f"Ensure this field has no more than {max_length} characters.")
    return value


def _choice(raw: dict, name: str, errors: _Errors, *, choices: frozenset, default=REQUIRED):
    value = raw.get(name, default)
    if value is REQUIRED:
        errors.add(name, REQUIRED)
        return None
    if value is None:
        errors.add(name, "This field may not be null.")
    elif not isinstance(value, str) or value not in choices:
        errors.add(name, f'"{value}" is not a valid choice.')
        return None
    return value


def _datetime(raw: dict, name: str, errors: _Errors) -> datetime | None:
    value = raw.get(name)
    if value is None:
        errors.add(name, REQUIRED if name not in raw else "This field may not be null.")
        return None
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:  # well formed but not a date, such as month 13
        parsed = None
    if parsed is None:
        errors.add(name, "Datetime has wrong format. Use ISO 8601.")
        return None
    parsed = parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)
    try:
        in_range = DATE_MIN <= parsed.astimezone(UTC).date() <= DATE_MAX
    except OverflowError:  # an offset that takes it past year 1 or 9999 in UTC
        in_range = False
    if not in_range:
        errors.add(name, OUT_OF_RANGE)
        return None
    return parsed


def _tokens(raw: dict, errors: _Errors) -> tuple[str, TokenBreakdown | None, dict]:
    """(usage format, breakdown, fee units) from the flat fields or the vendor's usage object."""
    usage_format = _choice(raw, "usage_format", errors, choices=USAGE_FORMATS, default=UsageFormat.FLAT)
    fee_units = {}
    try:
        fee_units = usage_objects.fee_units_parse(raw.get("fee_units"))
    except usage_objects.UsageObjectError as error:
        errors.add(error.field, error.message)
    if usage_format == UsageFormat.FLAT:
        if raw.get("usage") is not None:
            errors.add("usage_format", "Name the format of the usage object (openai_chat, anthropic...).")
            return usage_format, None, fee_units
        # Parts not sent are zero; leaving them out keeps the common event on the fast path.
        values = {
            name: _integer(raw, name, errors, **TOKENS, default=REQUIRED if name in TOTALS else 0)
            for name in usage_objects.FLAT_FIELDS
            if name in TOTALS or name in raw
        }
        if any(value is None or name in errors for name, value in values.items()):
            return usage_format, None, fee_units
        try:
            return usage_format, usage_objects.breakdown_from_flat(values), fee_units
        except usage_objects.UsageObjectError as error:
            errors.add(error.field, error.message)
            return usage_format, None, fee_units
    if usage_format is None:
        return usage_format, None, fee_units
    for name in usage_objects.FLAT_FIELDS:
        if raw.get(name) is not None:
            errors.add(name, "Send either the flat token fields or a usage object, not both.")
    if "usage" not in raw:
        errors.add("usage", REQUIRED)
        return usage_format, None, fee_units
    try:
        breakdown, units = usage_objects.breakdown_from_usage(usage_format, raw["usage"])
    except usage_objects.UsageObjectError as error:
        errors.add(error.field, error.message)
        return usage_format, None, fee_units
    for name, count in units.items():
        fee_units[name] = fee_units.get(name, 0) + count
    return usage_format, breakdown, fee_units


def usage_event_parse(raw, *, texts_storable: bool = False) -> tuple[UsageEvent | None, dict]:
    """(event, {}) for a valid event, (None, errors per field) otherwise. Nested fields of a usage
    object are named with dots (`usage.prompt_tokens_details.cached_tokens`). `texts_storable`: the
    parser has found every text of the body storable (billing_project.parsers.TEXTS_STORABLE)."""
    if not isinstance(raw, dict):
        return None, {"non_field_errors": ["Invalid data. Expected a dictionary."]}
    if not texts_storable and (problems := text_problems(raw)):
        # PostgreSQL text cannot hold NUL, nor UTF-8 a lone surrogate: refused here, for this event alone,
        # before a field that echoes what it was sent (a choice, a fee name) puts it in the answer.
        return None, problems
    errors = _Errors()
    usage_format, breakdown, fee_units = _tokens(raw, errors)
    fields = {
        "request_id": _uuid(raw, "request_id", errors),
        "user_id": _integer(raw, "user_id", errors, minimum=1, maximum=2**63 - 1),
        "provider": _text(raw, "provider", errors, max_length=100),
        "model": _text(raw, "model", errors, max_length=255),
        "request_type": _choice(raw, "request_type", errors, choices=REQUEST_TYPES),
        "request_started_at": _datetime(raw, "request_started_at", errors),
        "request_completed_at": _datetime(raw, "request_completed_at", errors),
        "service_tier": _choice(raw, "service_tier", errors, choices=SERVICE_TIERS, default=ServiceTier.STANDARD),
        "hold_id": _uuid(raw, "hold_id", errors, required=False),
        "streaming_segments": _integer(raw, "streaming_segments", errors, minimum=0, maximum=MAX_TOKENS, default=None),
        "region": _text(raw, "region", errors, max_length=50, required=False),
    }
    started, completed = fields["request_started_at"], fields["request_completed_at"]
    if started and completed and completed < started:
        errors.add("request_completed_at", "Must not be before request_started_at.")
    elif started and completed and completed - started > MAX_DURATION:
        errors.add("request_completed_at", f"A request lasts at most {MAX_DURATION.days} days.")
    if errors:
        return None, dict(errors)
    return UsageEvent(**fields, tokens=breakdown, usage_format=usage_format, fee_units=fee_units), {}
