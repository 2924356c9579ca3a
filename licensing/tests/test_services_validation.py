from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing_project.errors import NotFound, RuleViolation
from licensing import selectors, services
from licensing.codes import ErrorCode, InvalidReason
from licensing.models import LicenseStatus
from licensing.tests.factories import LicenseActivationFactory, PerpetualLicenseFactory, mistyped

pytestmark = pytest.mark.django_db


def validate(license_, *, user=None, key=None, fingerprint="laptop", version="1.2.0"):
    return services.license_validate(
        user=user or license_.user,
        license_key=key or license_.license_key,
        device_fingerprint=fingerprint,
        app_version=version,
    )


@pytest.fixture
def laptop(owned_license):
    return LicenseActivationFactory(
        license=owned_license, device_fingerprint="laptop", last_seen_at=timezone.now() - timedelta(days=3)
    )


def test_an_activated_device_on_a_covered_version_is_valid_and_seen(owned_license, laptop):
    result = validate(owned_license, version="1.10.0")

    assert (result.valid, result.reason) == (True, None)
    laptop.refresh_from_db()
    assert laptop.last_seen_at > timezone.now() - timedelta(minutes=1)
    assert laptop.app_version == "1.10.0"


def test_a_mistyped_key_is_bad_checksum_without_a_lookup(owned_license):
    with CaptureQueriesContext(connection) as queries:
        result = validate(owned_license, key=mistyped(owned_license.license_key))

    assert (result.valid, result.reason) == (False, InvalidReason.BAD_CHECKSUM)
    assert not [query for query in queries.captured_queries if "licensing_" in query["sql"]]


def test_a_well_formed_key_nobody_owns_is_unknown(owned_license):
    result = validate(owned_license, key=PerpetualLicenseFactory.build().license_key)

    assert (result.valid, result.reason) == (False, InvalidReason.UNKNOWN_KEY)


def test_someone_elses_key_is_unknown(owned_license, laptop, other_user):
    result = validate(owned_license, user=other_user)

    assert (result.valid, result.reason) == (False, InvalidReason.UNKNOWN_KEY)


def test_a_device_without_an_activation_is_not_activated(owned_license, laptop):
    result = validate(owned_license, fingerprint="desktop")

    assert (result.valid, result.reason) == (False, InvalidReason.NOT_ACTIVATED_ON_DEVICE)


def test_a_deactivated_device_is_not_activated(owned_license, laptop):
    laptop.deactivated_at = timezone.now()
    laptop.save()

    assert validate(owned_license).reason == InvalidReason.NOT_ACTIVATED_ON_DEVICE


@pytest.mark.parametrize("status", [LicenseStatus.SUSPENDED, LicenseStatus.REVOKED, LicenseStatus.EXPIRED])
def test_a_license_that_is_not_active_answers_with_its_status(owned_license, laptop, status):
    owned_license.status = status
    owned_license.save()

    result = validate(owned_license)

    assert (result.valid, result.reason) == (False, status)
    laptop.refresh_from_db()
    assert laptop.last_seen_at < timezone.now() - timedelta(days=2)


@pytest.mark.parametrize("version", ["2.0.0", "2.0.0rc1", "2.0.0.dev0"])
def test_a_version_past_the_licence_line_is_not_covered(owned_license, laptop, version):
    assert validate(owned_license, version=version).reason == InvalidReason.VERSION_NOT_COVERED


def test_an_invalid_app_version_is_a_validation_error(owned_license, laptop):
    with pytest.raises(ValidationError) as refused:
        validate(owned_license, version="latest")

    assert "app_version" in refused.value.message_dict


@pytest.mark.parametrize(
    ("version", "eligible", "reason"),
    [
        ("1.0.0", True, None),
        ("1.9.9", True, None),
        ("1.10.0", True, None),
        ("1.999.999", True, None),
        ("1.5.0rc1", True, None),
        ("2.0.0rc1", False, InvalidReason.VERSION_NOT_COVERED),
        ("2.0.0", False, InvalidReason.VERSION_NOT_COVERED),
    ],
)
def test_eligibility_across_versions(owned_license, version, eligible, reason):
    result = selectors.license_eligibility(
        user=owned_license.user, license_key=owned_license.license_key, version=version
    )

    assert (result.eligible, result.reason) == (eligible, reason)
    assert result.eligible_until_version == "1.999.999"


def test_eligibility_offers_the_upgrade_once_the_next_major_is_on_sale(owned_license, settings):
    settings.LICENSE_CURRENT_VERSION = "2.1.0"

    result = selectors.license_eligibility(
        user=owned_license.user, license_key=owned_license.license_key, version="2.1.0"
    )

    assert result.eligible is False
    assert result.upgrade_available is True
    assert result.upgrade_to_version == "2.0.0"
    assert str(result.upgrade_price_usd) == "79.20"  # bought today: 20 % early-upgrade discount


def test_eligibility_offers_no_upgrade_to_a_major_not_on_sale(owned_license):
    result = selectors.license_eligibility(
        user=owned_license.user, license_key=owned_license.license_key, version="2.0.0"
    )

    assert (result.eligible, result.upgrade_available, result.upgrade_to_version) == (False, False, None)


def test_eligibility_of_a_suspended_license_is_refused_with_its_status(owned_license):
    owned_license.status = LicenseStatus.SUSPENDED
    owned_license.save()

    result = selectors.license_eligibility(
        user=owned_license.user, license_key=owned_license.license_key, version="1.0.0"
    )

    assert (result.eligible, result.reason) == (False, "suspended")


def test_eligibility_of_someone_elses_key_is_not_found(owned_license, other_user):
    with pytest.raises(NotFound) as refused:
        selectors.license_eligibility(user=other_user, license_key=owned_license.license_key, version="1.0.0")

    assert refused.value.code == ErrorCode.LICENSE_NOT_FOUND


def test_eligibility_of_a_mistyped_key_is_bad_checksum(owned_license):
    with pytest.raises(RuleViolation) as refused:
        selectors.license_eligibility(user=owned_license.user, license_key="REPHLO-AAAA", version="1.0.0")

    assert refused.value.code == ErrorCode.BAD_CHECKSUM


def test_eligibility_of_an_invalid_version_names_the_field(owned_license):
    with pytest.raises(ValidationError) as refused:
        selectors.license_eligibility(user=owned_license.user, license_key=owned_license.license_key, version="x.y")

    assert "version" in refused.value.message_dict


def test_byok_is_active_only_for_an_active_license_with_byok(user, other_user, django_assert_num_queries):
    PerpetualLicenseFactory(user=user, status=LicenseStatus.SUSPENDED)
    PerpetualLicenseFactory(user=other_user, byok_enabled=False)

    with django_assert_num_queries(1):
        assert selectors.byok_active_for(user_id=user.pk) is False
    assert selectors.byok_active_for(user_id=other_user.pk) is False

    PerpetualLicenseFactory(user=user)
    assert selectors.byok_active_for(user_id=user.pk) is True
