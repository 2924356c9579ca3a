from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from billing_project.models import TimestampedModel, choices_check
from licensing.codes import ErrorCode
from licensing.keys import key_is_valid

DEFAULT_MAX_ACTIVATIONS = 3


class LicenseStatus(models.TextChoices):
    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    EXPIRED = "expired"


class UpgradeStatus(models.TextChoices):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    REFUNDED = "refunded"


def validate_license_key(value: str) -> None:
    if not key_is_valid(value):
        raise ValidationError("Not a license key: wrong shape or check character.", code=ErrorCode.BAD_CHECKSUM)


class PerpetualLicense(TimestampedModel):
    """A perpetual desktop license. Invariants: the key is unique (format REPHLO-XXXX-XXXX-XXXX-XXXX
    with a check character); at most `max_activations` devices are active at once, and a license
    changes devices at most LICENSE_DEVICE_CHANGES_PER_DAY times in 24 hours (both enforced by
    licensing.services under this row's lock); only an active license can be activated."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="perpetual_licenses", db_index=False
    )
    license_key = models.CharField(max_length=29, unique=True, validators=[validate_license_key])
    purchase_price_usd = models.DecimalField(
        max_digits=10,
        decimal_places=2,
        help_text="Paid, in purchase_currency (named for USD; another currency is never converted); 0 for grants.",
    )
    purchase_currency = models.CharField(max_length=3, default="usd", help_text="ISO 4217 code, lower case.")
    purchased_version = models.CharField(max_length=32, help_text="App version (PEP 440) the license was bought for.")
    eligible_until_version = models.CharField(
        max_length=32,
        help_text="Highest app version covered: the end of the bought major line, M.999.999 "
        "(1.4.2 -> 1.999.999); a paid upgrade moves it to the next line's end.",
    )
    max_activations = models.PositiveSmallIntegerField(default=DEFAULT_MAX_ACTIVATIONS)
    status = models.CharField(
        max_length=16,
        choices=LicenseStatus.choices,
        default=LicenseStatus.ACTIVE,
        help_text="pending until paid; active; suspended (staff, reversible); revoked (staff, final, "
        "devices deactivated); expired.",
    )
    status_reason = models.TextField(blank=True, help_text="Why staff last suspended, revoked or reactivated it.")
    byok_enabled = models.BooleanField(default=True, help_text="Bring your own key: usage is not charged in credits.")
    acquisition_coupon_code = models.CharField(max_length=50, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    checkout_session_id = models.CharField(
        max_length=255, blank=True, help_text="The payment session that bought it (offline_... without Stripe)."
    )

    class Meta:
        constraints = [
            choices_check("status", LicenseStatus),
            models.CheckConstraint(condition=Q(purchase_price_usd__gte=0), name="license_price_not_negative"),
            models.CheckConstraint(condition=Q(max_activations__gte=1), name="license_max_activations_positive"),
            models.UniqueConstraint(
                fields=["checkout_session_id"], condition=~Q(checkout_session_id=""), name="license_one_per_checkout"
            ),
        ]
        indexes = [
            models.Index(fields=["byok_enabled", "status"], name="license_byok_status_idx"),
            models.Index(fields=["user", "status"], name="license_user_status_idx"),
            models.Index(fields=["acquisition_coupon_code"], name="license_coupon_code_idx"),
        ]

    def __str__(self):
        return f"{self.license_key[:7]}…{self.license_key[-4:]} ({self.status})"


class LicenseActivation(TimestampedModel):
    """A device using a license. Invariant: one active row per (license, device fingerprint);
    a deactivated row keeps its history and is never reused."""

    license = models.ForeignKey(PerpetualLicense, on_delete=models.CASCADE, related_name="activations", db_index=False)
    device_fingerprint = models.CharField(max_length=128)
    device_name = models.CharField(max_length=255, blank=True)
    os_type = models.CharField(max_length=64, blank=True)
    app_version = models.CharField(max_length=32, blank=True)
    activated_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["license", "device_fingerprint"],
                condition=Q(deactivated_at__isnull=True),
                name="activation_one_active_per_device",
            ),
        ]
        indexes = [
            models.Index(fields=["license", "deactivated_at"], name="activation_license_active_idx"),
            models.Index(fields=["license", "activated_at"], name="activation_license_time_idx"),
        ]

    def __str__(self):
        return f"{self.device_name or self.device_fingerprint[:12]} on {self.license_id}"


class VersionUpgrade(TimestampedModel):
    """A paid upgrade of a license to the next major version. Created pending with its price fixed
    when the checkout starts; completing it (once: idempotent) raises the license's
    eligible_until_version to the end of `to_version`'s major line."""

    license = models.ForeignKey(PerpetualLicense, on_delete=models.CASCADE, related_name="upgrades", db_index=False)
    from_version = models.CharField(max_length=32)
    to_version = models.CharField(max_length=32)
    upgrade_price_usd = models.DecimalField(max_digits=10, decimal_places=2, help_text="USD charged, after discount.")
    discount_usd = models.DecimalField(
        max_digits=10, decimal_places=2, default=0, help_text="Early-upgrade discount taken off the list price."
    )
    status = models.CharField(
        max_length=16,
        choices=UpgradeStatus.choices,
        default=UpgradeStatus.PENDING,
        help_text="pending until paid, then completed.",
    )
    purchased_at = models.DateTimeField(null=True, blank=True)
    checkout_session_id = models.CharField(max_length=255, blank=True, help_text="The payment session that paid it.")

    class Meta:
        constraints = [
            choices_check("status", UpgradeStatus),
            models.CheckConstraint(
                condition=Q(upgrade_price_usd__gte=0) & Q(discount_usd__gte=0), name="upgrade_amounts_not_negative"
            ),
            models.UniqueConstraint(
                fields=["checkout_session_id"], condition=~Q(checkout_session_id=""), name="upgrade_one_per_checkout"
            ),
        ]
        indexes = [models.Index(fields=["license", "status"], name="upgrade_license_status_idx")]

    def __str__(self):
        return f"{self.from_version} -> {self.to_version} ({self.status})"
