from datetime import timedelta

import pytest
from django.utils import timezone

from billing_project.errors import Conflict
from conftest import run_concurrently
from licensing import services
from licensing.codes import ErrorCode
from licensing.models import LicenseActivation
from licensing.tests.factories import LicenseActivationFactory, PerpetualLicenseFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DAY = timedelta(days=1)


def activate(license_, fingerprint: str):
    return services.activation_create(
        user=license_.user, license_key=license_.license_key, device_fingerprint=fingerprint
    )


def test_ten_devices_racing_for_three_seats_get_exactly_three(user):
    license_ = PerpetualLicenseFactory(user=user, max_activations=3)

    results = run_concurrently(lambda n: activate(license_, f"device-{n}"), list(range(10)))

    activated = [result for result in results if isinstance(result, services.ActivationResult)]
    refused = [result for result in results if isinstance(result, Conflict)]
    assert len(activated) == 3, results
    assert len(refused) == 7, results
    assert {error.code for error in refused} == {ErrorCode.ACTIVATION_LIMIT_REACHED}
    assert sorted(result.activations_used for result in activated) == [1, 2, 3]
    assert LicenseActivation.objects.filter(license=license_, deactivated_at__isnull=True).count() == 3


def test_one_device_activating_ten_times_at_once_gets_one_activation(user):
    license_ = PerpetualLicenseFactory(user=user)

    results = run_concurrently(lambda _: activate(license_, "laptop"), list(range(10)))

    assert all(isinstance(result, services.ActivationResult) for result in results), results
    assert sum(result.created for result in results) == 1
    assert len({result.activation.pk for result in results}) == 1
    assert LicenseActivation.objects.filter(license=license_).count() == 1


def test_concurrent_device_changes_never_exceed_the_daily_limit(user, settings):
    # given: ten seats, each used by a device retired days ago, so every new device is a change
    settings.LICENSE_DEVICE_CHANGES_PER_DAY = 4
    license_ = PerpetualLicenseFactory(user=user, max_activations=10)
    long_ago = timezone.now() - timedelta(days=3)
    for n in range(10):
        LicenseActivationFactory(
            license=license_, device_fingerprint=f"old-{n}", activated_at=long_ago, deactivated_at=long_ago + DAY
        )

    results = run_concurrently(lambda n: activate(license_, f"device-{n}"), list(range(10)))

    assert sum(isinstance(result, services.ActivationResult) for result in results) == 4, results
    assert LicenseActivation.objects.filter(license=license_, deactivated_at__isnull=True).count() == 4
