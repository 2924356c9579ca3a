"""No usable secret in the console: issued refresh tokens, idempotency keys and stored bodies,
license keys (unless a permission allows them whole), and exports that are audited reads. The
object history cannot be flushed."""

import json

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from audit.models import AdminAuditLog, AuditAction
from audit.redaction import mask_license_key
from billing_project.tests.factories import IdempotencyKeyFactory
from conftest import access_token_for, bearer, role_grant
from licensing.tests.factories import PerpetualLicenseFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def support_console(django_user_model):
    user = django_user_model.objects.create_user(username="helpdesk", email="helpdesk@example.com", is_staff=True)
    client = Client()
    client.force_login(role_grant(user, "support"))
    return client


@pytest.fixture
def admin_role_console(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


# Regression (issue 20): the outstanding-token admin showed users' full refresh JWTs, which worked
# as they were on auth/token/refresh/ (silent impersonation).
def test_the_issued_token_pages_show_no_refresh_token(admin_client, user):
    refresh = str(RefreshToken.for_user(user))
    outstanding = OutstandingToken.objects.get(user=user)

    listed = admin_client.get("/admin/token_blacklist/outstandingtoken/")
    shown = admin_client.get(f"/admin/token_blacklist/outstandingtoken/{outstanding.pk}/change/")

    assert listed.status_code == shown.status_code == 200
    for page in (listed, shown):
        assert refresh not in page.content.decode()
        assert refresh.split(".")[1] not in page.content.decode()  # not even the payload
    assert outstanding.jti in shown.content.decode()


def test_revoking_an_api_session_in_the_console_blacklists_its_refresh_token(admin_client, user, api_client):
    refresh = str(RefreshToken.for_user(user))
    outstanding = OutstandingToken.objects.get(user=user)

    response = admin_client.post(
        "/admin/token_blacklist/outstandingtoken/",
        {"action": "revoke_refresh_tokens", "_selected_action": [outstanding.pk], "apply": "1", "reason": "stolen"},
    )
    refreshed = api_client.post("/api/v1/auth/token/refresh/", {"refresh": refresh}, format="json")

    assert response.status_code == 302
    assert BlacklistedToken.objects.filter(token=outstanding).exists()
    assert refreshed.status_code == 401
    row = AdminAuditLog.objects.get(resource_type="token_blacklist.outstandingtoken")
    assert (row.action, row.new_value["reason"]) == (AuditAction.REVOKE, "stolen")
    assert refresh not in json.dumps(row.new_value)


# Regression (issue 20): idempotency records showed their keys and full license keys.
def test_the_idempotency_record_pages_mask_the_key_and_the_secrets_of_the_body(admin_client):
    key = "b1946ac9-2d2e-4c4b-8f5d-fa3b3f0c0d11"
    license_key = "REPHLO-ABCD-EFGH-JKLM-NPQR"
    record = IdempotencyKeyFactory(
        key=key,
        response_body=json.dumps({"license_key": license_key, "access": "eyJhbGciOi.secret.sig", "ok": True}),
    )

    listed = admin_client.get("/admin/billing_project/idempotencykey/").content.decode()
    shown = admin_client.get(f"/admin/billing_project/idempotencykey/{record.pk}/change/").content.decode()

    for page in (listed, shown):
        assert key not in page
        assert license_key not in page
    assert mask_license_key(license_key) in shown
    assert "eyJhbGciOi.secret.sig" not in shown


def test_the_license_page_masks_the_key_for_staff_without_the_full_key_permission(support_console):
    license_ = PerpetualLicenseFactory()

    page = support_console.get(f"/admin/licensing/perpetuallicense/{license_.pk}/change/").content.decode()

    assert license_.license_key not in page
    assert mask_license_key(license_.license_key) in page
    assert not AdminAuditLog.objects.filter(action=AuditAction.READ).exists()


def test_the_license_page_shows_the_whole_key_to_its_permission_and_audits_the_read(admin_role_console, staff_user):
    license_ = PerpetualLicenseFactory()

    page = admin_role_console.get(f"/admin/licensing/perpetuallicense/{license_.pk}/change/").content.decode()

    assert license_.license_key in page
    row = AdminAuditLog.objects.get(action=AuditAction.READ)
    assert (row.actor, row.resource_type, row.resource_id) == (
        staff_user,
        "licensing.perpetuallicense",
        str(license_.pk),
    )
    assert row.new_value == {"full_license_keys": [str(license_.pk)]}


# Regression (issue 20): the GDPR export showed full license keys that the staff API masks.
def test_the_personal_data_export_masks_license_keys_unless_the_reader_may_see_them(
    api_client, staff_client, django_user_model
):
    license_ = PerpetualLicenseFactory()
    exporter = django_user_model.objects.create_user(username="dpo", email="dpo@example.com", is_staff=True)
    exporter.user_permissions.add(*Permission.objects.filter(codename__in=("view_user", "export_user")))
    path = f"/api/v1/admin/users/{license_.user_id}/"

    masked = api_client.get(path, **bearer(access_token_for(exporter))).content.decode()
    whole = staff_client.get(path).content.decode()

    assert license_.license_key not in masked
    assert mask_license_key(license_.license_key) in masked
    assert license_.license_key in whole
    rows = AdminAuditLog.objects.filter(action=AuditAction.EXPORT).order_by("sequence")
    assert [(row.actor.username, row.resource_id, row.new_value["full_license_keys"]) for row in rows] == [
        ("dpo", str(license_.user_id), False),
        ("staff@example.com", str(license_.user_id), True),
    ]


def test_the_personal_data_export_is_a_console_action_and_an_audited_read(admin_role_console, staff_user, user):
    response = admin_role_console.post(
        "/admin/auth/user/", {"action": "export_personal_data", "_selected_action": [user.pk]}
    )

    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="user-{user.pk}-export.json"'
    assert json.loads(response.content)["user"]["email"] == user.email
    row = AdminAuditLog.objects.get(action=AuditAction.EXPORT)
    assert (row.actor, row.resource_type, row.resource_id, row.endpoint) == (
        staff_user,
        "auth.user",
        str(user.pk),
        "/admin/auth/user/",
    )


# Regression (issue 20): `manage.py auditlogflush` wiped the object history.
def test_auditlogflush_refuses_and_the_object_history_stays(user):
    user.first_name = "Changed"
    user.save()
    PerpetualLicenseFactory()
    history = LogEntry.objects.count()
    assert history > 0

    with pytest.raises(CommandError, match="disabled"):
        call_command("auditlogflush", "--yes")

    assert LogEntry.objects.count() == history
