from decimal import Decimal

import pytest
from django.urls import reverse

from audit.models import AdminAuditLog, AuditAction
from licensing import keys
from licensing.models import LicenseActivation, LicenseStatus, PerpetualLicense
from licensing.tests.factories import LicenseActivationFactory, PerpetualLicenseFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:licensing_perpetuallicense_changelist")


def run_action(admin_client, action: str, licenses, reason: str = ""):
    return admin_client.post(
        CHANGELIST,
        {
            "action": action,
            "_selected_action": [str(license_.pk) for license_ in licenses],
            "reason": reason,
            "apply": "1",
        },
        follow=True,
    )


def test_adding_a_license_in_the_console_issues_it_through_the_service(admin_client, admin_user, user):
    response = admin_client.post(
        reverse("admin:licensing_perpetuallicense_add"),
        {"user": user.pk, "purchased_version": "", "purchase_price_usd": "0", "max_activations": "2"},
    )

    assert response.status_code == 302
    license_ = PerpetualLicense.objects.get()
    assert keys.key_is_valid(license_.license_key)
    assert (license_.status, license_.purchased_version, license_.eligible_until_version) == (
        LicenseStatus.ACTIVE,
        "1.0.0",
        "1.999.999",
    )
    assert (license_.max_activations, license_.byok_enabled, license_.purchase_price_usd) == (2, False, Decimal("0"))
    assert response["Location"] == reverse("admin:licensing_perpetuallicense_changelist")
    row = AdminAuditLog.objects.get()
    assert (row.action, row.actor, row.resource_id) == (AuditAction.CREATE, admin_user, str(license_.pk))


def test_the_add_form_asks_only_what_staff_choose(admin_client):
    form = admin_client.get(reverse("admin:licensing_perpetuallicense_add")).context["adminform"].form

    assert set(form.fields) == {"user", "purchased_version", "purchase_price_usd", "max_activations", "byok_enabled"}


def test_status_and_key_are_read_only_on_the_change_form(admin_client):
    license_ = PerpetualLicenseFactory()

    form = (
        admin_client.get(reverse("admin:licensing_perpetuallicense_change", args=[license_.pk]))
        .context["adminform"]
        .form
    )

    assert "status" not in form.fields
    assert "license_key" not in form.fields
    assert "eligible_until_version" in form.fields


def test_suspend_action_with_a_reason_suspends_and_audits(admin_client, admin_user):
    licenses = PerpetualLicenseFactory.create_batch(2)

    response = run_action(admin_client, "suspend_licenses", licenses, reason="payment disputed")

    assert response.status_code == 200
    assert set(PerpetualLicense.objects.values_list("status", flat=True)) == {LicenseStatus.SUSPENDED}
    rows = AdminAuditLog.objects.filter(action=AuditAction.SUSPEND)
    assert rows.count() == 2
    assert {row.actor for row in rows} == {admin_user}
    assert {row.new_value["status_reason"] for row in rows} == {"payment disputed"}


def test_revoke_action_deactivates_devices_and_reports_refusals(admin_client):
    active = PerpetualLicenseFactory()
    LicenseActivationFactory(license=active)
    already_revoked = PerpetualLicenseFactory(status=LicenseStatus.REVOKED)

    response = run_action(admin_client, "revoke_licenses", [active, already_revoked], reason="refund issued")

    active.refresh_from_db()
    assert active.status == LicenseStatus.REVOKED
    assert not LicenseActivation.objects.filter(deactivated_at__isnull=True).exists()
    assert AdminAuditLog.objects.filter(action=AuditAction.REVOKE).count() == 1
    messages = [str(message) for message in response.context["messages"]]
    assert any(f"revoked REPHLO-****-****-****-{active.license_key[-4:]}" in message for message in messages)
    refused = f"Refused: REPHLO-…{already_revoked.license_key[-4:]} (revoked)"
    assert any(message.startswith(refused) for message in messages)


def test_a_status_action_without_a_reason_changes_nothing(admin_client):
    license_ = PerpetualLicenseFactory()

    response = run_action(admin_client, "revoke_licenses", [license_])

    license_.refresh_from_db()
    assert license_.status == LicenseStatus.ACTIVE
    assert not AdminAuditLog.objects.exists()
    assert b"errorlist" in response.content  # the reason form is shown again


def test_reactivate_action_restores_suspended_licenses(admin_client):
    license_ = PerpetualLicenseFactory(status=LicenseStatus.SUSPENDED)

    run_action(admin_client, "reactivate_licenses", [license_], reason="dispute resolved")

    license_.refresh_from_db()
    assert license_.status == LicenseStatus.ACTIVE
    assert AdminAuditLog.objects.get().action == AuditAction.ACTIVATE
