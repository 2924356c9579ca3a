from django.apps import AppConfig


class LicensingConfig(AppConfig):
    name = "licensing"
    verbose_name = "Licensing"

    def ready(self):
        from audit.history import history_track
        from licensing import services
        from licensing.models import LicenseActivation, PerpetualLicense, VersionUpgrade
        from payments.models import OperationKind
        from payments.registry import effect_register

        # Paid checkouts of our kinds come back here, from the offline provider or Stripe's webhook.
        effect_register(OperationKind.LICENSE_CHECKOUT, succeeded=services.license_purchase_complete)
        effect_register(OperationKind.LICENSE_UPGRADE_CHECKOUT, succeeded=services.license_upgrade_complete)

        # Object history for the console; a license key is kept masked in it, as in lists.
        history_track(
            PerpetualLicense,
            mask_fields=["license_key"],
            mask_callable="audit.redaction.mask_license_key",
        )
        for model in (LicenseActivation, VersionUpgrade):
            history_track(model)
