from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing_project.errors import Conflict, NotFound, RuleViolation, TooManyRequests
from licensing import services
from licensing.codes import ErrorCode
from licensing.models import LicenseActivation, LicenseStatus
from licensing.tests.factories import LicenseActivationFactory, PerpetualLicenseFactory, mistyped

pytestmark = pytest.mark.django_db

START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def activate(license_, fingerprint: str, **fields):
    return services.activation_create(
        user=license_.user, license_key=license_.license_key, device_fingerprint=fingerprint, **fields
    )


def deactivate(license_, fingerprint: str):
    return services.activation_deactivate(
        user=license_.user, license_key=license_.license_key, device_fingerprint=fingerprint
    )


def test_activation_takes_a_seat(owned_license):
    result = activate(owned_license, "laptop", device_name="Ada's laptop", os_type="macos", app_version="1.2.0")

    assert result.created is True
    assert (result.activations_used, result.max_activations) == (1, 3)
    row = LicenseActivation.objects.get()
    assert (row.device_fingerprint, row.device_name, row.os_type, row.app_version) == (
        "laptop",
        "Ada's laptop",
        "macos",
        "1.2.0",
    )
    assert row.deactivated_at is None


def test_reactivating_an_active_device_is_idempotent(owned_license):
    first = activate(owned_license, "laptop")

    again = activate(owned_license, "laptop", app_version="1.3.0")

    assert again.created is False
    assert again.activation.pk == first.activation.pk
    assert again.activations_used == 1
    assert LicenseActivation.objects.count() == 1
    assert LicenseActivation.objects.get().app_version == "1.3.0"


def test_reactivating_an_active_device_costs_no_device_change(owned_license, settings):
    settings.LICENSE_DEVICE_CHANGES_PER_DAY = 1
    activate(owned_license, "laptop")

    results = [activate(owned_license, "laptop") for _ in range(5)]

    assert all(result.created is False for result in results)


def test_a_device_beyond_the_seats_is_refused_with_the_active_devices_listed(owned_license):
    for name in ("one", "two", "three"):
        activate(owned_license, name, device_name=f"Device {name}")

    with pytest.raises(Conflict) as refused:
        activate(owned_license, "four")

    assert refused.value.code == ErrorCode.ACTIVATION_LIMIT_REACHED
    devices = refused.value.extra["active_devices"]
    assert [device["device_name"] for device in devices] == ["Device one", "Device two", "Device three"]
    assert all(device["last_seen_at"] for device in devices)
    assert refused.value.extra["max_activations"] == 3
    assert LicenseActivation.objects.count() == 3


def test_someone_elses_key_is_not_found(owned_license, other_user):
    with pytest.raises(NotFound) as refused:
        services.activation_create(user=other_user, license_key=owned_license.license_key, device_fingerprint="stolen")

    assert refused.value.code == ErrorCode.LICENSE_NOT_FOUND
    assert not LicenseActivation.objects.exists()


def test_a_mistyped_key_is_refused_before_any_lookup(owned_license):
    typo = mistyped(owned_license.license_key)

    with CaptureQueriesContext(connection) as queries, pytest.raises(RuleViolation) as refused:
        services.activation_create(user=owned_license.user, license_key=typo, device_fingerprint="laptop")

    assert refused.value.code == ErrorCode.BAD_CHECKSUM
    assert not [query for query in queries.captured_queries if "licensing_" in query["sql"]]


def test_key_is_accepted_in_lower_case_with_blanks(owned_license):
    result = services.activation_create(
        user=owned_license.user, license_key=f"  {owned_license.license_key.lower()} ", device_fingerprint="laptop"
    )

    assert result.created is True


@pytest.mark.parametrize("status", [LicenseStatus.PENDING, LicenseStatus.SUSPENDED, LicenseStatus.REVOKED])
def test_a_license_that_is_not_active_cannot_be_activated(user, status):
    license_ = PerpetualLicenseFactory(user=user, status=status)

    with pytest.raises(Conflict) as refused:
        activate(license_, "laptop")

    assert refused.value.code == ErrorCode.LICENSE_NOT_ACTIVE
    assert refused.value.extra["license_status"] == status
    assert not LicenseActivation.objects.exists()


def test_deactivation_frees_the_seat_and_keeps_the_row(owned_license):
    for name in ("one", "two", "three"):
        activate(owned_license, name)

    result = deactivate(owned_license, "two")
    replacement = activate(owned_license, "four")

    assert result.activations_used == 2
    assert result.activation.deactivated_at is not None
    assert replacement.created is True
    assert LicenseActivation.objects.count() == 4
    assert LicenseActivation.objects.filter(deactivated_at__isnull=True).count() == 3


def test_deactivating_a_device_that_is_not_active_is_not_found(owned_license):
    activate(owned_license, "laptop")
    deactivate(owned_license, "laptop")

    with pytest.raises(NotFound) as refused:
        deactivate(owned_license, "laptop")

    assert refused.value.code == ErrorCode.ACTIVATION_NOT_FOUND


def test_a_device_deactivated_before_can_be_activated_again_as_a_new_row(owned_license):
    first = activate(owned_license, "laptop")
    deactivate(owned_license, "laptop")

    again = activate(owned_license, "laptop")

    assert again.created is True
    assert again.activation.pk != first.activation.pk
    assert LicenseActivation.objects.filter(device_fingerprint="laptop").count() == 2


def test_the_deactivate_activate_loop_is_stopped_by_the_daily_limit_and_allowed_24_hours_later(owned_license, settings):
    # given: the default limit of 6 device changes a day, spent one per minute after setting up the laptop
    settings.LICENSE_DEVICE_CHANGES_PER_DAY = 6
    with time_machine.travel(START, tick=False) as clock:
        activate(owned_license, "laptop")
        for _ in range(3):
            clock.shift(timedelta(minutes=1))
            deactivate(owned_license, "laptop")
            clock.shift(timedelta(minutes=1))
            activate(owned_license, "laptop")

        # when: the seventh change
        with pytest.raises(TooManyRequests) as refused:
            deactivate(owned_license, "laptop")

        # then: refused until the first change (START + 1 minute) leaves the 24-hour window
        assert refused.value.code == ErrorCode.DEVICE_CHANGE_LIMIT
        assert refused.value.extra["retry_after"] == int(timedelta(hours=24, minutes=-5).total_seconds())
        assert LicenseActivation.objects.filter(deactivated_at__isnull=True).count() == 1

        clock.move_to(START + timedelta(hours=24))
        with pytest.raises(TooManyRequests):
            deactivate(owned_license, "laptop")

        clock.move_to(START + timedelta(hours=24, minutes=1))
        assert deactivate(owned_license, "laptop").activations_used == 0


def test_deactivations_count_as_device_changes(owned_license, settings):
    settings.LICENSE_DEVICE_CHANGES_PER_DAY = 1
    with time_machine.travel(START, tick=False):
        activate(owned_license, "laptop")
        activate(owned_license, "desktop")
        deactivate(owned_license, "laptop")

        with pytest.raises(TooManyRequests) as refused:
            deactivate(owned_license, "desktop")

    assert refused.value.extra["retry_after"] == 24 * 3600
    assert LicenseActivation.objects.filter(deactivated_at__isnull=True).count() == 1


def test_first_activations_into_unused_seats_are_not_device_changes(owned_license, settings):
    settings.LICENSE_DEVICE_CHANGES_PER_DAY = 1
    with time_machine.travel(START, tick=False):
        results = [activate(owned_license, name) for name in ("laptop", "desktop", "tablet")]

        assert [result.activations_used for result in results] == [1, 2, 3]


def test_an_activation_into_a_seat_another_device_freed_is_a_device_change(owned_license, settings):
    settings.LICENSE_DEVICE_CHANGES_PER_DAY = 2
    with time_machine.travel(START, tick=False):
        activate(owned_license, "laptop")
        deactivate(owned_license, "laptop")
        activate(owned_license, "new-laptop")

        with pytest.raises(TooManyRequests):
            deactivate(owned_license, "new-laptop")
        assert activate(owned_license, "desktop").created is True  # a second seat, never used before


def test_a_customer_who_swapped_one_device_can_replace_another(owned_license):
    # given: three seats set up, then one device swapped, and another retired (2 of 3 seats in use)
    with time_machine.travel(START, tick=False) as clock:
        for name in ("laptop", "desktop", "tablet"):
            activate(owned_license, name)
        clock.shift(timedelta(hours=1))
        deactivate(owned_license, "laptop")
        activate(owned_license, "new-laptop")
        clock.shift(timedelta(hours=1))
        deactivate(owned_license, "desktop")

        # when: the replacement of the retired device is activated the same day
        replacement = activate(owned_license, "new-desktop")

    # then: the default limit (6 changes a day) still has room: 4 changes so far
    assert replacement.created is True
    assert replacement.activations_used == 3


def test_replacing_a_laptop_is_never_blocked(owned_license):
    # given: three devices set up on day one
    with time_machine.travel(START, tick=False) as clock:
        for name in ("laptop", "desktop", "tablet"):
            activate(owned_license, name)

        # when: the laptop dies the same day and is replaced
        clock.shift(timedelta(hours=3))
        deactivate(owned_license, "laptop")
        replacement = activate(owned_license, "new-laptop")

    # then
    assert replacement.created is True
    assert replacement.activations_used == 3


def test_changes_older_than_24_hours_do_not_count(owned_license, settings):
    settings.LICENSE_DEVICE_CHANGES_PER_DAY = 2
    LicenseActivationFactory(
        license=owned_license,
        device_fingerprint="old",
        activated_at=START - timedelta(days=2),
        deactivated_at=START - timedelta(hours=25),
    )

    with time_machine.travel(START, tick=False):
        activate(owned_license, "laptop")
        assert activate(owned_license, "desktop").created is True
