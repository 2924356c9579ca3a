from django.apps import AppConfig


class LicensingConfig(AppConfig):
    name = "licensing"
    verbose_name = "Licensing"

    def ready(self):
        from audit.history import history_track
        from licensing import services
        from licensing.models import LicenseActivation, PerpetualLicense, VersionUpgrade
        from payments.models import OperationKind
        from payments.registry import PaymentReactions, effect_register, payment_reactions_register

        # Paid checkouts of our kinds come back here, from the offline provider or Stripe's webhook.
        # One that ends unpaid (expired, its delayed payment failed) ends what it left pending.
        effect_register(
            OperationKind.LICENSE_CHECKOUT,
            succeeded=services.license_purchase_complete,
            failed=services.license_purchase_failed,
        )
        effect_register(
            OperationKind.LICENSE_UPGRADE_CHECKOUT,
            succeeded=services.license_upgrade_complete,
            failed=services.license_upgrade_failed,
        )
        # A refund or a dispute of a license's payment, and of a version upgrade's.
        payment_reactions_register(
            OperationKind.LICENSE_CHECKOUT,
            PaymentReactions(
                refunded_fully=services.license_payment_refunded,
                dispute_opened=services.license_payment_disputed,
                dispute_won=services.license_dispute_won,
            ),
        )
        payment_reactions_register(
            OperationKind.LICENSE_UPGRADE_CHECKOUT,
            PaymentReactions(
                refunded_fully=services.license_upgrade_payment_refunded,
                dispute_opened=services.license_upgrade_payment_disputed,
                dispute_won=services.license_upgrade_dispute_won,
            ),
        )

        # Object history for the console; a license key is kept masked in it, as in lists.
        history_track(
            PerpetualLicense,
            mask_fields=["license_key"],
            mask_callable="audit.redaction.mask_license_key",
        )
        for model in (LicenseActivation, VersionUpgrade):
            history_track(model)
