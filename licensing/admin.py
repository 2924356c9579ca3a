from django.contrib import admin

from audit.admin_base import AuditedModelAdmin
from audit.redaction import mask_license_key
from licensing.models import LicenseActivation, PerpetualLicense, VersionUpgrade


@admin.register(PerpetualLicense)
class PerpetualLicenseAdmin(AuditedModelAdmin):
    """Lists show a masked key (a list is easily shared or screenshotted); the change page shows it whole."""

    list_display = (
        "masked_license_key",
        "user",
        "status",
        "byok_enabled",
        "purchased_version",
        "eligible_until_version",
        "max_activations",
        "purchase_price_usd",
        "acquisition_coupon_code",
        "activated_at",
    )
    list_filter = ("status", "byok_enabled")
    list_select_related = ("user",)
    search_fields = ("license_key", "user__email", "acquisition_coupon_code")
    date_hierarchy = "created_at"
    autocomplete_fields = ("user",)
    readonly_fields = ("created_at", "updated_at")

    @admin.display(description="license key", ordering="license_key")
    def masked_license_key(self, obj):
        return mask_license_key(obj.license_key)

    def get_readonly_fields(self, request, obj=None):
        # An issued key is in the customer's hands: changing it would lock them out.
        if obj is None:
            return self.readonly_fields
        return ("license_key", *self.readonly_fields)


@admin.register(LicenseActivation)
class LicenseActivationAdmin(AuditedModelAdmin):
    list_display = (
        "license",
        "device_name",
        "os_type",
        "app_version",
        "activated_at",
        "last_seen_at",
        "deactivated_at",
    )
    list_filter = ("os_type", ("deactivated_at", admin.EmptyFieldListFilter))
    list_select_related = ("license",)
    search_fields = ("license__license_key", "license__user__email", "device_fingerprint", "device_name")
    date_hierarchy = "activated_at"
    autocomplete_fields = ("license",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(VersionUpgrade)
class VersionUpgradeAdmin(AuditedModelAdmin):
    list_display = (
        "license",
        "from_version",
        "to_version",
        "upgrade_price_usd",
        "discount_usd",
        "status",
        "purchased_at",
    )
    list_filter = ("status", "to_version")
    list_select_related = ("license",)
    search_fields = ("license__license_key", "license__user__email")
    date_hierarchy = "created_at"
    autocomplete_fields = ("license",)
    readonly_fields = ("created_at", "updated_at")
