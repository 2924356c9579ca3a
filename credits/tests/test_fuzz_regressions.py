"""Inputs the API fuzzer (billing_project/tests/test_fuzz.py) found answering 500; each must be a 400."""

import pytest

from credits.models import TokenUsageLedger
from credits.tests.conftest import fund, usage_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]

RECORD = "/api/v1/usage/record/"
BATCH = "/api/v1/usage/record-batch/"


@pytest.mark.parametrize("request_type", [{}, [], ["chat"]])
def test_record_rejects_a_non_string_request_type(service_client, user, request_type):
    # given
    fund(user, 1000)

    # when
    response = service_client.post(RECORD, usage_event(user, request_type=request_type), format="json")

    # then
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "validation_error"
    assert "request_type" in response.json()["errors"]
    assert TokenUsageLedger.objects.count() == 0


def test_record_rejects_a_well_formed_but_impossible_datetime(service_client, user):
    # given
    fund(user, 1000)

    # when month 13 matches the ISO pattern but is no date
    response = service_client.post(RECORD, usage_event(user, request_started_at="2024-13-01T00:00:00Z"), format="json")

    # then
    assert response.status_code == 400, response.content
    assert "request_started_at" in response.json()["errors"]
    assert TokenUsageLedger.objects.count() == 0


def test_record_batch_reports_a_non_string_request_type_per_event(service_client, user):
    # given
    fund(user, 1000)

    # when
    response = service_client.post(BATCH, {"events": [usage_event(user, request_type={})]}, format="json")

    # then the batch answers; the event is refused, nothing recorded
    assert response.status_code < 500, response.content
    assert TokenUsageLedger.objects.count() == 0
