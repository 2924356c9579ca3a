"""Shapes of the license endpoints. Business rules (key check, versions, limits) live in the services."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audit.redaction import mask_license_key
from billing_project.roles import FULL_LICENSE_KEY_PERMISSION
from licensing.models import DEFAULT_MAX_ACTIVATIONS, LicenseActivation, PerpetualLicense, VersionUpgrade
from payments.api.serializers import CheckoutOutput

LICENSE_KEY_INPUT_LENGTH = 64


def license_key_field():
    return serializers.CharField(max_length=LICENSE_KEY_INPUT_LENGTH, help_text="REPHLO-XXXX-XXXX-XXXX-XXXX")


class PurchaseInput(serializers.Serializer):
    version = serializers.CharField(
        max_length=32, required=False, help_text="The app version bought; the release on sale by default."
    )


class ActivateInput(serializers.Serializer):
    license_key = license_key_field()
    device_fingerprint = serializers.CharField(max_length=128)
    device_name = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)
    os = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
    app_version = serializers.CharField(max_length=32, required=False, default="", allow_blank=True)


class DeactivateInput(serializers.Serializer):
    license_key = license_key_field()
    device_fingerprint = serializers.CharField(max_length=128)


class ValidateInput(serializers.Serializer):
    license_key = serializers.CharField(max_length=LICENSE_KEY_INPUT_LENGTH, allow_blank=True)
    device_fingerprint = serializers.CharField(max_length=128)
    app_version = serializers.CharField(max_length=32)


class UpgradeInput(serializers.Serializer):
    license_key = license_key_field()


class EligibilityQuery(serializers.Serializer):
    version = serializers.CharField(max_length=32)


class ReasonInput(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class IssueInput(serializers.Serializer):
    user_id = serializers.IntegerField()
    purchased_version = serializers.CharField(max_length=32, required=False)
    purchase_price_usd = serializers.DecimalField(
        max_digits=10, decimal_places=2, min_value=0, required=False, help_text="Paid outside the checkout; 0.00."
    )
    max_activations = serializers.IntegerField(min_value=1, max_value=100, default=DEFAULT_MAX_ACTIVATIONS)
    byok_enabled = serializers.BooleanField(default=True)


class ActivationOutput(serializers.ModelSerializer):
    activation_id = serializers.UUIDField(source="id")
    os = serializers.CharField(source="os_type")

    class Meta:
        model = LicenseActivation
        fields = [
            "activation_id",
            "device_fingerprint",
            "device_name",
            "os",
            "app_version",
            "activated_at",
            "last_seen_at",
        ]


class OwnerLicenseOutput(serializers.ModelSerializer):
    """A license as its owner sees it: the key in full, with the devices active on it."""

    activations = serializers.SerializerMethodField()

    class Meta:
        model = PerpetualLicense
        fields = [
            "id",
            "license_key",
            "status",
            "purchased_version",
            "eligible_until_version",
            "max_activations",
            "byok_enabled",
            "purchase_price_usd",
            "activated_at",
            "created_at",
            "activations",
        ]

    @extend_schema_field(ActivationOutput(many=True))
    def get_activations(self, obj):
        # Lists prefetch the active devices (license_list_for_owner); a single license reads them.
        active = getattr(obj, "active_activations", None)
        if active is None:
            active = obj.activations.filter(deactivated_at__isnull=True).order_by("activated_at")
        return ActivationOutput(active, many=True).data


class PurchaseOutput(serializers.Serializer):
    license = OwnerLicenseOutput()
    checkout = CheckoutOutput()


class ActivateOutput(serializers.Serializer):
    activation_id = serializers.UUIDField(source="activation.id")
    activations_used = serializers.IntegerField()
    max_activations = serializers.IntegerField()


class DeactivateOutput(ActivateOutput):
    deactivated_at = serializers.DateTimeField(source="activation.deactivated_at")


class ValidateOutput(serializers.Serializer):
    valid = serializers.BooleanField()
    reason = serializers.CharField(allow_null=True)


class EligibilityOutput(serializers.Serializer):
    eligible = serializers.BooleanField()
    reason = serializers.CharField(allow_null=True)
    version = serializers.CharField()
    purchased_version = serializers.CharField()
    eligible_until_version = serializers.CharField()
    status = serializers.CharField()
    upgrade_available = serializers.BooleanField()
    upgrade_to_version = serializers.CharField(allow_null=True)
    upgrade_price_usd = serializers.DecimalField(max_digits=10, decimal_places=2, allow_null=True)
    upgrade_discount_usd = serializers.DecimalField(max_digits=10, decimal_places=2, allow_null=True)


class UpgradeOutput(serializers.ModelSerializer):
    class Meta:
        model = VersionUpgrade
        fields = ["id", "from_version", "to_version", "upgrade_price_usd", "discount_usd", "status", "purchased_at"]


class UpgradePurchaseOutput(serializers.Serializer):
    upgrade = UpgradeOutput()
    license = OwnerLicenseOutput()
    checkout = CheckoutOutput()


def reveals_full_keys(request) -> bool:
    return request is not None and request.user.has_perm(FULL_LICENSE_KEY_PERMISSION)


class StaffLicenseOutput(serializers.ModelSerializer):
    """A license as staff see it through the API: the key masked, unless the caller holds
    `licensing.view_full_license_key` (every such read is audited)."""

    license_key = serializers.SerializerMethodField()
    user_email = serializers.EmailField(source="user.email", read_only=True)
    # A plain string here: the schema names the status enum once, on OwnerLicenseOutput.
    status = serializers.CharField(help_text="pending, active, suspended, revoked or expired.")
    activations_used = serializers.SerializerMethodField()

    class Meta:
        model = PerpetualLicense
        fields = [
            "id",
            "license_key",
            "user",
            "user_email",
            "status",
            "status_reason",
            "purchased_version",
            "eligible_until_version",
            "max_activations",
            "activations_used",
            "byok_enabled",
            "purchase_price_usd",
            "acquisition_coupon_code",
            "activated_at",
            "created_at",
            "updated_at",
        ]

    def get_license_key(self, obj) -> str:
        if reveals_full_keys(self.context.get("request")):
            return obj.license_key
        return mask_license_key(obj.license_key)

    def get_activations_used(self, obj) -> int:
        # Lists annotate the count (license_list_for_staff); a single license counts its devices.
        used = getattr(obj, "activations_used", None)
        return used if used is not None else obj.activations.filter(deactivated_at__isnull=True).count()
