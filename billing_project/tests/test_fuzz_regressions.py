"""Inputs the fuzzer found that once answered 500."""

import pytest

from audit.models import AdminAuditLog

pytestmark = pytest.mark.django_db


def test_a_body_with_nul_characters_is_served_and_audited_without_them(user_client):
    response = user_client.post("/api/v1/licenses/purchase/", {"note\u0000": ["a\u0000b"]}, format="json")

    assert response.status_code == 201, response.content
    row = AdminAuditLog.objects.filter(resource_type="payments.checkout").get()
    assert row.request_body == {"note\ufffd": ["a\ufffdb"]}


@pytest.mark.postgres
def test_a_timestamp_filter_beyond_any_time_zone_is_a_400_problem(staff_client):
    response = staff_client.get("/api/v1/admin/audit-logs/", {"timestamp_after": "1372-04-01T12:53:04-17:21"})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_value"
