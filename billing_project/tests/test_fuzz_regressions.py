"""Inputs the fuzzer found that once answered 500."""

import pytest

from audit.models import AdminAuditLog

pytestmark = pytest.mark.django_db


def test_a_body_with_nul_characters_is_a_400_problem_naming_the_key_and_starts_nothing(user_client):
    response = user_client.post("/api/v1/licenses/purchase/", {"note\u0000": ["a\u0000b"]}, format="json")

    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == ["note\ufffd"]
    assert not AdminAuditLog.objects.filter(resource_type="payments.paymentoperation").exists()


@pytest.mark.parametrize(
    "moment", ["1372-04-01T12:53:04-17:21", "0503-12-27T14:16:05-01:21", "2026-01-01T00:00:00+14:00"]
)
def test_a_timestamp_filter_with_any_offset_is_compared_in_utc(staff_client, moment):
    audit_logs = staff_client.get("/api/v1/admin/audit-logs/", {"timestamp_after": moment})
    payment_events = staff_client.get("/api/v1/admin/payment-events/", {"created_at_before": moment})

    assert (audit_logs.status_code, payment_events.status_code) == (200, 200)


@pytest.mark.parametrize(
    "path", ["/api/v1/admin/payment-events/", "/api/v1/admin/licenses/", "/api/v1/admin/subscriptions/"]
)
def test_a_user_filter_beyond_the_id_range_is_a_400_problem(staff_client, path):
    response = staff_client.get(path, {"user": "2.700260004994968e+16"})

    assert response.status_code == 400
    assert "user" in response.json()["errors"]


def test_a_value_the_database_refuses_is_a_400_problem():
    from django.db import DataError
    from rest_framework.test import APIRequestFactory

    from billing_project.errors import problem_exception_handler

    request = APIRequestFactory().get("/api/v1/anything/")
    response = problem_exception_handler(DataError("integer out of range"), {"request": request})

    assert response.status_code == 400
    assert response.data["code"] == "invalid_value"
