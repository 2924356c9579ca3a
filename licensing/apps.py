from django.apps import AppConfig


class LicensingConfig(AppConfig):
    name = "licensing"
    verbose_name = "Licensing"

    def ready(self):
        from auditlog.registry import auditlog

        from licensing.models import LicenseActivation, PerpetualLicense, VersionUpgrade

        # Object history for the console; a license key is kept masked in it, as in lists.
        auditlog.register(
            PerpetualLicense,
            exclude_fields=["updated_at"],
            mask_fields=["license_key"],
            mask_callable="audit.redaction.mask_license_key",
        )
        for model in (LicenseActivation, VersionUpgrade):
            auditlog.register(model, exclude_fields=["updated_at"])
