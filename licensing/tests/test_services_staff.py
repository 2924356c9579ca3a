import pytest

from audit.models import AdminAuditLog, AuditAction
from billing_project.errors import Conflict, RuleViolation
from licensing import selectors, services
from licensing.codes import ErrorCode, InvalidReason
from licensing.models import LicenseActivation, LicenseStatus, PerpetualLicense
from licensing.tests.factories import LicenseActivationFactory, PerpetualLicenseFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_devices(owned_license):
    return [LicenseActivationFactory(license=owned_license, device_fingerprint=name) for name in ("one", "two")]


def test_suspend_stops_validation_and_byok_and_is_audited(owned_license, two_devices, staff_user):
    license_ = services.license_suspend(license_id=owned_license.pk, actor=staff_user, reason="chargeback opened")

    assert (license_.status, license_.status_reason) == (LicenseStatus.SUSPENDED, "chargeback opened")
    assert LicenseActivation.objects.filter(deactivated_at__isnull=True).count() == 2
    assert selectors.byok_active_for(user_id=owned_license.user_id) is False
    result = services.license_validate(
        user=owned_license.user, license_key=owned_license.license_key, device_fingerprint="one", app_version="1.0.0"
    )
    assert result.reason == InvalidReason.SUSPENDED
    row = AdminAuditLog.objects.get(action=AuditAction.SUSPEND)
    assert (row.actor, row.resource_type, row.resource_id) == (
        staff_user,
        "licensing.perpetuallicense",
        str(license_.pk),
    )
    assert (row.previous_value["status"], row.new_value["status"]) == ("active", "suspended")
    assert row.new_value["status_reason"] == "chargeback opened"
    assert owned_license.license_key not in str(row.previous_value) + str(row.new_value)


def test_reactivate_restores_a_suspended_license(owned_license, staff_user):
    services.license_suspend(license_id=owned_license.pk, actor=staff_user, reason="chargeback opened")

    license_ = services.license_reactivate(license_id=owned_license.pk, actor=staff_user, reason="chargeback won")

    assert license_.status == LicenseStatus.ACTIVE
    assert selectors.byok_active_for(user_id=owned_license.user_id) is True
    assert AdminAuditLog.objects.filter(action=AuditAction.ACTIVATE, resource_id=str(license_.pk)).count() == 1


def test_revoke_deactivates_every_device_and_is_audited(owned_license, two_devices, staff_user):
    license_ = services.license_revoke(license_id=owned_license.pk, actor=staff_user, reason="refunded")

    assert license_.status == LicenseStatus.REVOKED
    assert not LicenseActivation.objects.filter(deactivated_at__isnull=True).exists()
    assert LicenseActivation.objects.count() == 2
    row = AdminAuditLog.objects.get(action=AuditAction.REVOKE)
    assert row.new_value["status"] == "revoked"
    assert row.new_value["devices_deactivated"] == 2


@pytest.mark.parametrize(
    ("status", "service"),
    [
        (LicenseStatus.REVOKED, services.license_revoke),
        (LicenseStatus.REVOKED, services.license_suspend),
        (LicenseStatus.REVOKED, services.license_reactivate),
        (LicenseStatus.SUSPENDED, services.license_suspend),
        (LicenseStatus.ACTIVE, services.license_reactivate),
        (LicenseStatus.PENDING, services.license_suspend),
    ],
)
def test_illegal_transitions_are_conflicts_that_change_nothing(user, staff_user, status, service):
    license_ = PerpetualLicenseFactory(user=user, status=status)

    with pytest.raises(Conflict) as refused:
        service(license_id=license_.pk, actor=staff_user, reason="because")

    assert refused.value.code == ErrorCode.TRANSITION_NOT_ALLOWED
    assert PerpetualLicense.objects.get().status == status
    assert not AdminAuditLog.objects.exists()


def test_a_transition_needs_a_reason(owned_license, staff_user):
    with pytest.raises(RuleViolation) as refused:
        services.license_revoke(license_id=owned_license.pk, actor=staff_user, reason="   ")

    assert refused.value.code == ErrorCode.REASON_REQUIRED
    assert PerpetualLicense.objects.get().status == LicenseStatus.ACTIVE


def test_deleting_the_owner_removes_the_license_its_activations_and_upgrades(owned_license, two_devices):
    owned_license.upgrades.create(from_version="1.0.0", to_version="2.0.0", upgrade_price_usd="99.00")

    owned_license.user.delete()

    assert not PerpetualLicense.objects.exists()
    assert not LicenseActivation.objects.exists()
    assert not owned_license.upgrades.model.objects.exists()
