"""What an audit row, an event's metadata or a stored result keeps of a value: `to_json` gives what the
standard library's round trip through DjangoJSONEncoder gives, or refuses what it refuses."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock

from django.core.serializers.json import DjangoJSONEncoder
from hypothesis import given

from audit.services import to_json
from billing_project.tests.documents import Colour, documents


def standard_library_copy(value):
    try:
        return json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    except Exception as error:  # compared with what to_json raises
        return type(error)


def kept(value):
    try:
        return to_json(value)
    except Exception as error:  # compared with what the standard library raises
        return type(error)


@given(documents)
def test_every_value_is_kept_as_the_standard_library_keeps_it(value):
    assert kept(value) == standard_library_copy(value)


def test_a_row_s_values_are_kept_as_text_where_json_has_no_type_for_them_without_the_standard_library():
    value = {
        "id": uuid.UUID("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
        "amount": Decimal("12.3400"),
        "at": datetime(2026, 12, 6, 21, 5, 3, 123456, tzinfo=UTC),
        "grace": timedelta(days=3),
        "status": Colour.RED,
        "credits": 2**63 - 1,
    }

    with mock.patch("audit.services.json.dumps", side_effect=AssertionError("the standard library's way was taken")):
        assert to_json(value) == {
            "id": "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "amount": "12.3400",
            "at": "2026-12-06T21:05:03.123Z",
            "grace": "P3DT00H00M00S",
            "status": "red",
            "credits": 2**63 - 1,
        }
        assert to_json(None) is None


def test_what_orjson_refuses_is_kept_by_the_standard_library():
    assert to_json({"credits": 2**80, "by_day": {1: "one"}}) == {"credits": 2**80, "by_day": {"1": "one"}}
