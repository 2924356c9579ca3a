from decimal import Decimal

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from billing_project.tests.factories import UserFactory
from licensing.models import LicenseActivation, LicenseStatus, PerpetualLicense, UpgradeStatus, VersionUpgrade

KEY_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def license_key(n: int) -> str:
    """A unique key of the REPHLO-XXXX-XXXX-XXXX-XXXX shape: n written in the unambiguous alphabet."""
    digits = ""
    for _ in range(16):
        n, digit = divmod(n, len(KEY_ALPHABET))
        digits = KEY_ALPHABET[digit] + digits
    return "REPHLO-" + "-".join(digits[i : i + 4] for i in range(0, 16, 4))


class PerpetualLicenseFactory(DjangoModelFactory):
    class Meta:
        model = PerpetualLicense

    user = factory.SubFactory(UserFactory)
    license_key = factory.Sequence(license_key)
    purchase_price_usd = Decimal("199.00")
    purchased_version = "1.0.0"
    eligible_until_version = "1.99.99"
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
