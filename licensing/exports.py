from billing_project.gdpr import export_section
from licensing.models import LicenseActivation, PerpetualLicense


@export_section("licenses")
def licenses_of(user) -> dict:
    return {
        "licenses": list(PerpetualLicense.objects.filter(user=user).values()),
        "activations": list(LicenseActivation.objects.filter(license__user=user).values()),
    }
