from django.apps import AppConfig


class LicensingConfig(AppConfig):
    name = "licensing"
    verbose_name = "Licensing"

    def ready(self):
        from auditlog.registry import auditlog

        from billing_project.payments import checkout_completion_register
        from licensing import services
        from licensing.models import LicenseActivation, PerpetualLicense, VersionUpgrade

        # Paid checkouts of our kinds come back here, from the offline provider or Stripe's webhook.
        checkout_completion_register(services.CHECKOUT_KIND_LICENSE, services.license_purchase_complete)
        checkout_completion_register(services.CHECKOUT_KIND_UPGRADE, services.license_upgrade_complete)

        # Object history for the console; a license key is kept masked in it, as in lists.
        auditlog.register(
            PerpetualLicense,
            exclude_fields=["updated_at"],
            mask_fields=["license_key"],
            mask_callable="audit.redaction.mask_license_key",
        )
        for model in (LicenseActivation, VersionUpgrade):
            auditlog.register(model, exclude_fields=["updated_at"])
