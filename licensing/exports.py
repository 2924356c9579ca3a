from billing_project.gdpr import export_section
from licensing.models import LicenseActivation, PerpetualLicense, VersionUpgrade


@export_section("licenses")
def licenses_of(user) -> dict:
    """The export goes to the user themselves: their keys are shown in full."""
    return {
        "licenses": list(PerpetualLicense.objects.filter(user=user).values()),
        "activations": list(LicenseActivation.objects.filter(license__user=user).values()),
        "upgrades": list(VersionUpgrade.objects.filter(license__user=user).values()),
    }
