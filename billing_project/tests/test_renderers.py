"""The API's renderer writes what DRF's JSONRenderer writes, byte for byte but for a float's notation, or
refuses what it refuses."""

import datetime
import json
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from rest_framework import renderers as drf_renderers
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from billing_project.renderers import JSONRenderer
from billing_project.tests.documents import Colour, documents
from credits.tests.factories import TokenUsageLedgerFactory


def drf_rendered(data, media_type=None):
    try:
        return drf_renderers.JSONRenderer().render(data, media_type)
    except Exception as error:  # compared with what ours raises
        return type(error)


def rendered(data, media_type=None):
    try:
        return JSONRenderer().render(data, media_type)
    except Exception as error:  # compared with what DRF's raises
        return type(error)


def holds_a_float(document) -> bool:
    """Whether DRF writes a float in it (its encoder writes a Decimal as a float)."""
    if isinstance(document, float | Decimal):
        return True
    if isinstance(document, dict):
        return any(holds_a_float(value) for value in document.values())
    return isinstance(document, list | tuple) and any(holds_a_float(item) for item in document)


@given(documents)
def test_every_document_is_written_as_drf_writes_it_or_refused_as_drf_refuses_it(document):
    ours, drf = rendered(document), drf_rendered(document)

    if isinstance(ours, bytes) and isinstance(drf, bytes) and ours != drf:
        # A float's shortest digits, in another notation (0.00009999 for 9.999e-05): the same number read back.
        assert holds_a_float(document)
        assert json.loads(ours) == json.loads(drf)
    else:
        assert ours == drf


def test_a_document_of_each_type_an_answer_holds_is_drf_s_text():
    created = datetime.datetime(2026, 12, 6, 21, 5, 3, 120, tzinfo=datetime.UTC)
    document = ReturnDict(
        {
            "id": uuid.UUID("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
            "amount": Decimal("12.3400"),
            "created_at": created,
            "status": Colour.RED,
            "note": "line\u2028break, para\u2029graph, caf\u00e9",
            "items": ReturnList([{"credits": 2**63 - 1}], serializer=None),
        },
        serializer=None,
    )

    assert rendered(document) == drf_rendered(document)
    assert rendered(document) == (
        b'{"id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","amount":12.34,'
        b'"created_at":"2026-12-06T21:05:03.000120Z","status":"red",'
        b'"note":"line\\u2028break, para\\u2029graph, caf\xc3\xa9","items":[{"credits":9223372036854775807}]}'
    )


def test_an_indented_answer_is_drf_s_indented_text():
    document = {"a": [1, {"b": None}], "when": datetime.date(2026, 12, 6)}

    assert rendered(document, "application/json; indent=2") == drf_rendered(document, "application/json; indent=2")
    assert rendered(document, "application/json; indent=2").startswith(b'{\n  "a"')


def test_nothing_is_rendered_as_an_empty_body():
    assert rendered(None) == b""


def test_a_text_drf_cannot_encode_is_refused_as_drf_refuses_it():
    assert rendered({"name": "\ud800"}) is UnicodeEncodeError


@pytest.mark.django_db
def test_a_list_answer_of_the_api_is_drf_s_text(user, user_client):
    TokenUsageLedgerFactory(user=user)

    response = user_client.get("/api/v1/me/usage/")

    assert response.status_code == 200
    assert len(response.json()["results"]) == 1
    assert response.content == drf_rendered(response.data)
