import pytest

from licensing.tests.factories import PerpetualLicenseFactory


@pytest.fixture
def owned_license(user):
    """An active 1.x license of `user`, 3 seats, BYOK on, no device yet."""
    return PerpetualLicenseFactory(user=user)
