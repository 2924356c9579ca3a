import pytest

from audit.models import AdminAuditLog, AuditAction
from licensing.models import LicenseActivation, LicenseStatus, PerpetualLicense
from licensing.tests.factories import LicenseActivationFactory, PerpetualLicenseFactory, license_key

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def masked(key: str) -> str:
    return f"REPHLO-****-****-****-{key[-4:]}"


def test_staff_list_is_paginated_masked_and_filterable(support_client, user, other_user):
    staff_client = support_client
    # A key of its own: the factory's first key (all 2s) would match any search.
    mine = PerpetualLicenseFactory(user=user, license_key=license_key(123_456))
    LicenseActivationFactory(license=mine)
    PerpetualLicenseFactory(user=user, status=LicenseStatus.SUSPENDED)
    PerpetualLicenseFactory(user=other_user, byok_enabled=False)

    everything = staff_client.get("/api/v1/admin/licenses/", {"page_size": 2}).json()
    suspended = staff_client.get("/api/v1/admin/licenses/", {"status": "suspended"}).json()
    no_byok = staff_client.get("/api/v1/admin/licenses/", {"byok_enabled": "false"}).json()
    of_user = staff_client.get("/api/v1/admin/licenses/", {"user": user.pk}).json()
    by_key = staff_client.get("/api/v1/admin/licenses/", {"search": mine.license_key[-4:].lower()}).json()

    assert everything["count"] == 3 and len(everything["results"]) == 2 and everything["next"]
    assert [row["status"] for row in suspended["results"]] == ["suspended"]
    assert [row["user"] for row in no_byok["results"]] == [other_user.pk]
    assert of_user["count"] == 2
    assert [row["id"] for row in by_key["results"]] == [str(mine.pk)]
    assert by_key["results"][0]["license_key"] == masked(mine.license_key)
    assert by_key["results"][0]["activations_used"] == 1
    assert mine.license_key not in str(everything)


def test_staff_issue_answers_201_and_is_audited(staff_client, staff_user, user):
    response = staff_client.post(
        "/api/v1/admin/licenses/",
        {"user_id": user.pk, "purchased_version": "1.2.0", "max_activations": 5},
        format="json",
    )

    assert response.status_code == 201
    license_ = PerpetualLicense.objects.get(user=user)
    body = response.json()
    assert (body["id"], body["license_key"], body["status"]) == (
        str(license_.pk),
        masked(license_.license_key),
        "active",
    )
    assert (body["max_activations"], body["eligible_until_version"], body["purchase_price_usd"]) == (
        5,
        "1.999.999",
        "0.00",
    )
    row = AdminAuditLog.objects.get(action=AuditAction.CREATE)
    assert (row.actor, row.resource_id, row.endpoint, row.method) == (
        staff_user,
        str(license_.pk),
        "/api/v1/admin/licenses/",
        "POST",
    )


def test_staff_issue_for_an_unknown_user_is_404(staff_client):
    response = staff_client.post("/api/v1/admin/licenses/", {"user_id": 987654}, format="json")

    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert not PerpetualLicense.objects.exists()


def test_suspend_then_revoke_through_the_api(staff_client, staff_user, owned_license):
    LicenseActivationFactory(license=owned_license)
    url = f"/api/v1/admin/licenses/{owned_license.pk}"

    suspended = staff_client.post(f"{url}/suspend/", {"reason": "fraud review"}, format="json")
    revoked = staff_client.post(f"{url}/revoke/", {"reason": "fraud confirmed"}, format="json")

    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert revoked.json()["status_reason"] == "fraud confirmed"
    assert revoked.json()["activations_used"] == 0
    owned_license.refresh_from_db()
    assert owned_license.status == LicenseStatus.REVOKED
    assert not LicenseActivation.objects.filter(deactivated_at__isnull=True).exists()
    actions = list(AdminAuditLog.objects.order_by("sequence").values_list("action", "actor", "status_code"))
    assert actions == [(AuditAction.SUSPEND, staff_user.pk, 200), (AuditAction.REVOKE, staff_user.pk, 200)]


def test_reactivate_through_the_api(staff_client, user):
    license_ = PerpetualLicenseFactory(user=user, status=LicenseStatus.SUSPENDED)

    response = staff_client.post(
        f"/api/v1/admin/licenses/{license_.pk}/reactivate/", {"reason": "cleared"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["status"] == "active"


def test_revoking_a_revoked_license_is_a_409_problem_and_the_failure_is_audited(staff_client, user):
    license_ = PerpetualLicenseFactory(user=user, status=LicenseStatus.REVOKED)

    response = staff_client.post(f"/api/v1/admin/licenses/{license_.pk}/revoke/", {"reason": "again"}, format="json")

    assert response.status_code == 409
    assert response["Content-Type"] == PROBLEM
    assert (response.json()["code"], response.json()["status"]) == ("license_transition_not_allowed", 409)
    failure = AdminAuditLog.objects.get()
    assert (failure.status_code, failure.resource_type) == (409, "licenses")


def test_a_transition_without_a_reason_is_a_400(staff_client, owned_license):
    response = staff_client.post(f"/api/v1/admin/licenses/{owned_license.pk}/suspend/", {}, format="json")

    assert response.status_code == 400
    assert "reason" in response.json()["errors"]
    owned_license.refresh_from_db()
    assert owned_license.status == LicenseStatus.ACTIVE


def test_an_unknown_license_id_is_404(staff_client):
    response = staff_client.post(
        "/api/v1/admin/licenses/00000000-0000-0000-0000-000000000000/suspend/", {"reason": "x"}, format="json"
    )

    assert response.status_code == 404
    assert response.json()["code"] == "license_not_found"


def test_plain_users_cannot_use_the_staff_routes(user_client, owned_license):
    assert user_client.get("/api/v1/admin/licenses/").status_code == 403
    response = user_client.post(f"/api/v1/admin/licenses/{owned_license.pk}/revoke/", {"reason": "x"}, format="json")
    assert response.status_code == 403
    owned_license.refresh_from_db()
    assert owned_license.status == LicenseStatus.ACTIVE


def test_staff_allowed_full_keys_see_them_and_each_such_read_is_audited(staff_client, staff_user, user):
    license_ = PerpetualLicenseFactory(user=user)

    listed = staff_client.get("/api/v1/admin/licenses/").json()
    one = staff_client.get(f"/api/v1/admin/licenses/{license_.pk}/").json()

    assert listed["results"][0]["license_key"] == license_.license_key
    assert one["license_key"] == license_.license_key
    reads = AdminAuditLog.objects.filter(action=AuditAction.READ, resource_type="licensing.perpetuallicense")
    assert reads.count() == 2
    assert {row.actor for row in reads} == {staff_user}
    assert [(row.resource_id, row.new_value) for row in reads] == [
        (str(license_.pk), {"full_license_keys": [str(license_.pk)]})
    ] * 2


def test_staff_without_the_full_key_permission_read_masked_keys_and_leave_no_read_row(support_client, user):
    license_ = PerpetualLicenseFactory(user=user)

    one = support_client.get(f"/api/v1/admin/licenses/{license_.pk}/").json()

    assert one["license_key"] == masked(license_.license_key)
    assert not AdminAuditLog.objects.filter(action=AuditAction.READ).exists()
