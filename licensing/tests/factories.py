from decimal import Decimal

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from billing_project.tests.factories import UserFactory
from licensing.keys import ALPHABET, BODY_LENGTH, key_from_payload
from licensing.models import LicenseActivation, LicenseStatus, PerpetualLicense, UpgradeStatus, VersionUpgrade


def license_key(n: int) -> str:
    """A unique, valid key: n written in the key alphabet as the payload, then its check character."""
    payload = ""
    for _ in range(BODY_LENGTH - 1):
        n, digit = divmod(n, len(ALPHABET))
        payload = ALPHABET[digit] + payload
    return key_from_payload(payload)


def mistyped(key: str) -> str:
    """The key with its last character replaced: what a one-character typo looks like."""
    return key[:-1] + ("2" if key[-1] != "2" else "3")


class PerpetualLicenseFactory(DjangoModelFactory):
    class Meta:
        model = PerpetualLicense

    user = factory.SubFactory(UserFactory)
    license_key = factory.Sequence(license_key)
    purchase_price_usd = Decimal("199.00")
    purchased_version = "1.0.0"
    eligible_until_version = "1.999.999"
    status = LicenseStatus.ACTIVE
    activated_at = factory.LazyFunction(timezone.now)


class LicenseActivationFactory(DjangoModelFactory):
    class Meta:
        model = LicenseActivation

    license = factory.SubFactory(PerpetualLicenseFactory)
    device_fingerprint = factory.Faker("sha256")
    device_name = "Test laptop"
    os_type = "macos"
    app_version = "1.0.0"
    activated_at = factory.LazyFunction(timezone.now)
    last_seen_at = factory.SelfAttribute("activated_at")


class VersionUpgradeFactory(DjangoModelFactory):
    class Meta:
        model = VersionUpgrade

    license = factory.SubFactory(PerpetualLicenseFactory)
    from_version = factory.SelfAttribute("license.purchased_version")
    to_version = "2.0.0"
    upgrade_price_usd = Decimal("49.00")
    status = UpgradeStatus.PENDING
