import pytest

from licensing.models import LicenseActivation, PerpetualLicense, VersionUpgrade
from licensing.tests.factories import LicenseActivationFactory, VersionUpgradeFactory

pytestmark = pytest.mark.django_db


def test_erasing_the_owner_removes_their_licenses_and_activations(staff_client, owned_license, other_user):
    LicenseActivationFactory(license=owned_license)
    VersionUpgradeFactory(license=owned_license)
    others = LicenseActivationFactory(license__user=other_user)

    response = staff_client.delete(f"/api/v1/admin/users/{owned_license.user_id}/")

    assert response.status_code == 204
    assert list(PerpetualLicense.objects.all()) == [others.license]
    assert list(LicenseActivation.objects.all()) == [others]
    assert not VersionUpgrade.objects.exists()


def test_the_export_holds_the_users_licenses_devices_and_upgrades(staff_client, owned_license):
    LicenseActivationFactory(license=owned_license)
    VersionUpgradeFactory(license=owned_license)

    body = staff_client.get(f"/api/v1/admin/users/{owned_license.user_id}/").json()["licenses"]

    assert [row["license_key"] for row in body["licenses"]] == [owned_license.license_key]
    assert len(body["activations"]) == 1
    assert len(body["upgrades"]) == 1
