from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Upper

from billing_project.enums import BillingCycle, SubscriptionTier
from billing_project.models import BaseModel, TimestampedModel, choices_check

MONEY = {"max_digits": 12, "decimal_places": 2}


class CouponType(models.TextChoices):
    PERCENTAGE_DISCOUNT = "percentage_discount"
    FIXED_AMOUNT_DISCOUNT = "fixed_amount_discount"
    TIER_SPECIFIC_DISCOUNT = "tier_specific_discount"
    DURATION_BONUS = "duration_bonus"
    BYOK_MIGRATION = "byok_migration"


class DiscountType(models.TextChoices):
    PERCENTAGE = "percentage"
    FIXED_AMOUNT = "fixed_amount"
    CREDITS = "credits"
    MONTHS_FREE = "months_free"


class RedemptionStatus(models.TextChoices):
    SUCCESS = "success"
    FAILED = "failed"
    REVERSED = "reversed"
    PENDING = "pending"


class FraudDetectionType(models.TextChoices):
    VELOCITY_USER = "velocity_user"
    VELOCITY_IP = "velocity_ip"
    VELOCITY_DEVICE = "velocity_device"
    MULTIPLE_ACCOUNTS_DEVICE = "multiple_accounts_device"
    MULTIPLE_ACCOUNTS_IP = "multiple_accounts_ip"
    CODE_GUESSING = "code_guessing"


class FraudSeverity(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class GuessChannel(models.TextChoices):
    VALIDATE = "validate"
    REDEEM = "redeem"


class ValidationRuleType(models.TextChoices):
    FIRST_TIME_USER = "first_time_user"
    EMAIL_DOMAIN = "email_domain"
    MIN_ACCOUNT_AGE_DAYS = "min_account_age_days"
    MAX_REDEMPTIONS_PER_IP = "max_redemptions_per_ip"


# The discount types each coupon type may carry (SPEC 5, coupon kinds).
DISCOUNT_TYPES_OF = {
    CouponType.PERCENTAGE_DISCOUNT: {DiscountType.PERCENTAGE},
    CouponType.FIXED_AMOUNT_DISCOUNT: {DiscountType.FIXED_AMOUNT, DiscountType.CREDITS},
    CouponType.TIER_SPECIFIC_DISCOUNT: {DiscountType.PERCENTAGE, DiscountType.FIXED_AMOUNT},
    CouponType.DURATION_BONUS: {DiscountType.MONTHS_FREE},
    CouponType.BYOK_MIGRATION: {""},
}
# Discounts on a price: what a checkout or a subscription's next charge can take off.
PRICE_DISCOUNTS = {DiscountType.PERCENTAGE, DiscountType.FIXED_AMOUNT}
COUNTED_DISCOUNTS = {DiscountType.CREDITS, DiscountType.MONTHS_FREE}
SUBSCRIBABLE_TIERS = {
    SubscriptionTier.PRO,
    SubscriptionTier.PRO_MAX,
    SubscriptionTier.ENTERPRISE_PRO,
    SubscriptionTier.ENTERPRISE_MAX,
}


class CouponCampaign(TimestampedModel):
    """A marketing campaign grouping coupons. Invariant: spent_usd never exceeds budget_usd."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    budget_usd = models.DecimalField(**MONEY, null=True, blank=True, help_text="USD; empty means no budget cap.")
    spent_usd = models.DecimalField(**MONEY, default=0, help_text="USD of discounts and credit value given.")
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="campaign_dates_ordered"),
            models.CheckConstraint(
                condition=Q(budget_usd__isnull=True) | Q(spent_usd__lte=F("budget_usd")), name="campaign_within_budget"
            ),
            models.CheckConstraint(condition=Q(spent_usd__gte=0), name="campaign_spent_not_negative"),
        ]
        indexes = [models.Index(fields=["is_active", "starts_at", "ends_at"], name="campaign_active_dates_idx")]

    def __str__(self):
        return self.name


class Coupon(TimestampedModel):
    """A redeemable code. Codes are unique case-insensitively and stored upper-case. Deleting is a
    soft delete (deleted_at/deleted_by): redemption history always survives."""

    code = models.CharField(max_length=50)
    description = models.TextField(blank=True)
    coupon_type = models.CharField(max_length=24, choices=CouponType.choices)
    discount_type = models.CharField(
        max_length=16, choices=DiscountType.choices, blank=True, help_text="Unused for byok_migration."
    )
    discount_value = models.DecimalField(
        **MONEY, default=0, help_text="Percent, USD, credits or months, depending on discount_type."
    )
    applicable_tiers = models.JSONField(default=list, blank=True, help_text="Empty: every tier.")
    applicable_billing_cycles = models.JSONField(default=list, blank=True, help_text="Empty: every cycle.")
    min_purchase_usd = models.DecimalField(**MONEY, null=True, blank=True)
    new_customers_only = models.BooleanField(default=False)
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField(null=True, blank=True)
    max_uses = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: unlimited.")
    max_uses_per_user = models.PositiveIntegerField(default=1)
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            choices_check("coupon_type", CouponType),
            choices_check("discount_type", DiscountType, allow_blank=True),
            models.UniqueConstraint(Upper("code"), name="coupon_code_unique_ci"),
            models.CheckConstraint(condition=Q(discount_value__gte=0), name="coupon_value_not_negative"),
            models.CheckConstraint(
                condition=~Q(discount_type=DiscountType.PERCENTAGE) | Q(discount_value__lte=100),
                name="coupon_percentage_at_most_100",
            ),
            models.CheckConstraint(
                condition=Q(valid_until__isnull=True) | Q(valid_until__gt=F("valid_from")), name="coupon_dates_ordered"
            ),
            models.CheckConstraint(
                condition=Q(max_uses__isnull=True) | Q(max_uses__gte=1), name="coupon_max_uses_positive"
            ),
            models.CheckConstraint(condition=Q(max_uses_per_user__gte=1), name="coupon_max_uses_per_user_positive"),
        ]
        indexes = [
            models.Index(fields=["is_active", "deleted_at"], name="coupon_active_deleted_idx"),
            models.Index(fields=["valid_from", "valid_until"], name="coupon_validity_idx"),
        ]

    def __str__(self):
        return self.code

    def save(self, *args, **kwargs):
        self.code = self.code.strip().upper()  # stored upper-case; lookups are case-insensitive
        super().save(*args, **kwargs)

    def clean(self):
        errors = {}
        allowed = DISCOUNT_TYPES_OF.get(self.coupon_type, set())
        if self.discount_type not in allowed:
            names = ", ".join(sorted(choice or "(none)" for choice in allowed))
            errors["discount_type"] = f"A {self.coupon_type} coupon takes discount type {names}."
        elif self.discount_type in COUNTED_DISCOUNTS and (
            self.discount_value is None or self.discount_value < 1 or self.discount_value != int(self.discount_value)
        ):
            errors["discount_value"] = f"{self.discount_type} is a whole number of at least 1."
        elif self.discount_type in PRICE_DISCOUNTS and (self.discount_value is None or self.discount_value <= 0):
            errors["discount_value"] = "A discount must be more than zero."
        if self.coupon_type == CouponType.TIER_SPECIFIC_DISCOUNT and not self.applicable_tiers:
            errors["applicable_tiers"] = "A tier-specific coupon names its tiers."
        if not isinstance(self.applicable_tiers, list) or not set(self.applicable_tiers) <= SUBSCRIBABLE_TIERS:
            errors["applicable_tiers"] = f"A list of tiers among {', '.join(sorted(SUBSCRIBABLE_TIERS))}."
        cycles = self.applicable_billing_cycles
        if not isinstance(cycles, list) or not set(cycles) <= set(BillingCycle.values):
            errors["applicable_billing_cycles"] = f"A list of cycles among {', '.join(BillingCycle.values)}."
        if errors:
            raise ValidationError(errors)


class CampaignCoupon(BaseModel):
    """Links a coupon to its campaign. Invariant: a coupon belongs to at most one campaign, so its
    spending counts against one budget."""

    campaign = models.ForeignKey(CouponCampaign, on_delete=models.CASCADE, related_name="coupon_links", db_index=False)
    coupon = models.ForeignKey(Coupon, on_delete=models.CASCADE, related_name="campaign_links", db_index=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["coupon"], name="campaign_coupon_one_campaign")]
        indexes = [models.Index(fields=["campaign"], name="campaign_coupon_campaign_idx")]

    def __str__(self):
        return f"{self.coupon_id} in {self.campaign_id}"


class CouponRedemption(TimestampedModel):
    """One attempt to redeem a coupon, successful or not (failed ones feed fraud analysis).

    A successful redemption, or a pending one (a checkout holding the coupon until it is paid),
    takes a use: use numbers are unique per coupon and per coupon and user, and are handed out under
    the coupon's row lock, where the limits are counted. Survives the deletion of its coupon and of
    its user (SET NULL).
    """

    coupon = models.ForeignKey(
        Coupon, null=True, blank=True, on_delete=models.SET_NULL, related_name="redemptions", db_index=False
    )
    coupon_code = models.CharField(max_length=50, help_text="The code as entered, kept if the coupon goes.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="coupon_redemptions",
        db_index=False,
    )
    subscription = models.ForeignKey(
        "subscriptions.Subscription", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    campaign = models.ForeignKey(
        CouponCampaign, null=True, blank=True, on_delete=models.SET_NULL, related_name="redemptions", db_index=False
    )
    redemption_date = models.DateTimeField()
    status = models.CharField(max_length=10, choices=RedemptionStatus.choices)
    failure_reason = models.CharField(max_length=64, blank=True, help_text="The validation reason code.")
    use_number = models.PositiveIntegerField(null=True, blank=True)
    user_use_number = models.PositiveIntegerField(null=True, blank=True)
    original_amount_usd = models.DecimalField(**MONEY, default=0)
    discount_applied_usd = models.DecimalField(**MONEY, default=0)
    final_amount_usd = models.DecimalField(**MONEY, default=0)
    currency = models.CharField(
        max_length=3,
        default="usd",
        help_text="ISO 4217 code, lower case: the currency of the amounts (named for USD, never converted).",
    )
    credits_granted = models.PositiveIntegerField(default=0)
    months_granted = models.PositiveSmallIntegerField(default=0)
    credit_allocation = models.ForeignKey(
        "credits.CreditAllocation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    license_granted = models.ForeignKey(
        "licensing.PerpetualLicense", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    license_granted_at = models.DateTimeField(null=True, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    device_fingerprint = models.CharField(max_length=128, blank=True)

    class Meta:
        constraints = [
            choices_check("status", RedemptionStatus),
            models.UniqueConstraint(
                fields=["coupon", "use_number"],
                condition=Q(status__in=["success", "pending"]),
                name="redemption_use_number_unique",
            ),
            models.UniqueConstraint(
                fields=["coupon", "user", "user_use_number"],
                condition=Q(status__in=["success", "pending"]),
                name="redemption_user_use_number_unique",
            ),
            models.CheckConstraint(
                condition=Q(final_amount_usd__gte=0) & Q(discount_applied_usd__gte=0), name="redemption_amounts_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["success", "pending"])
                | Q(use_number__isnull=False, user_use_number__isnull=False),
                name="redemption_success_takes_a_use",
            ),
            models.CheckConstraint(
                condition=Q(use_number__isnull=True) | Q(use_number__gte=1), name="redemption_use_number_positive"
            ),
        ]
        indexes = [
            models.Index(fields=["user", "status", "redemption_date"], name="redemption_user_status_idx"),
            models.Index(fields=["coupon", "status", "redemption_date"], name="redemption_coupon_status_idx"),
            models.Index(fields=["ip_address", "redemption_date"], name="redemption_ip_date_idx"),
            models.Index(fields=["device_fingerprint", "redemption_date"], name="redemption_device_date_idx"),
            models.Index(fields=["campaign", "status"], name="redemption_campaign_status_idx"),
            models.Index(fields=["status", "redemption_date"], name="redemption_status_date_idx"),
        ]

    def __str__(self):
        return f"{self.coupon_code} {self.status}"


class CouponUsageLimit(TimestampedModel):
    """Running totals of a coupon's use (kept in step with its successful redemptions)."""

    coupon = models.OneToOneField(Coupon, on_delete=models.CASCADE, related_name="usage")
    total_uses = models.PositiveIntegerField(default=0)
    unique_users = models.PositiveIntegerField(default=0)
    total_discount_usd = models.DecimalField(**MONEY, default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.total_uses} uses"


class CouponFraudDetection(TimestampedModel):
    """A suspicious pattern seen around a redemption. High or critical severity blocked it; others
    flag it for review until staff resolve it. Survives coupon and user deletion."""

    coupon = models.ForeignKey(
        Coupon, null=True, blank=True, on_delete=models.SET_NULL, related_name="fraud_detections", db_index=False
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    redemption = models.ForeignKey(
        CouponRedemption, null=True, blank=True, on_delete=models.SET_NULL, related_name="fraud_detections"
    )
    detection_type = models.CharField(max_length=32, choices=FraudDetectionType.choices)
    severity = models.CharField(max_length=10, choices=FraudSeverity.choices)
    details = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    device_fingerprint = models.CharField(max_length=128, blank=True)
    is_flagged = models.BooleanField(default=True)
    detected_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution = models.TextField(blank=True)

    class Meta:
        constraints = [
            choices_check("detection_type", FraudDetectionType),
            choices_check("severity", FraudSeverity),
        ]
        indexes = [
            models.Index(fields=["is_flagged", "resolved_at"], name="fraud_open_idx"),
            models.Index(fields=["user", "detected_at"], name="fraud_user_time_idx"),
            models.Index(fields=["coupon", "detected_at"], name="fraud_coupon_time_idx"),
        ]

    def __str__(self):
        return f"{self.detection_type} ({self.severity})"


class CouponCodeGuess(BaseModel):
    """A code that matched no coupon, tried through `coupons/validate/` or `coupons/redeem/`.

    Append-only. The guessing rule counts these per user and per IP over the last hour; they are
    kept after the user is deleted (SET NULL), like failed redemptions.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    code = models.CharField(max_length=50, help_text="The code tried, normalized.")
    channel = models.CharField(max_length=10, choices=GuessChannel.choices)
    tried_at = models.DateTimeField()

    class Meta:
        constraints = [choices_check("channel", GuessChannel)]
        indexes = [
            models.Index(fields=["user", "tried_at"], name="code_guess_user_time_idx"),
            models.Index(fields=["ip_address", "tried_at"], name="code_guess_ip_time_idx"),
        ]
        verbose_name_plural = "coupon code guesses"

    def __str__(self):
        return f"{self.code} ({self.channel})"


class CouponValidationRule(TimestampedModel):
    """An extra condition on a coupon, checked during validation."""

    coupon = models.ForeignKey(Coupon, on_delete=models.CASCADE, related_name="validation_rules", db_index=False)
    rule_type = models.CharField(max_length=32, choices=ValidationRuleType.choices)
    rule_value = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        constraints = [choices_check("rule_type", ValidationRuleType)]
        indexes = [models.Index(fields=["coupon", "is_active"], name="coupon_rule_active_idx")]

    def __str__(self):
        return f"{self.rule_type}"


class CouponAnalyticsSnapshot(TimestampedModel):
    """A coupon's figures for one day, rebuilt idempotently."""

    coupon = models.ForeignKey(Coupon, on_delete=models.CASCADE, related_name="analytics_snapshots", db_index=False)
    snapshot_date = models.DateField()
    redemptions = models.PositiveIntegerField(default=0)
    failed_redemptions = models.PositiveIntegerField(default=0)
    unique_users = models.PositiveIntegerField(default=0)
    discount_total_usd = models.DecimalField(**MONEY, default=0, help_text="USD redemptions only.")
    revenue_usd = models.DecimalField(**MONEY, default=0, help_text="USD redemptions only.")
    money_by_currency = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per currency, never converted: {"eur": {"discount_total": "5.00", "revenue": "14.00"}}.',
    )
    conversions = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["coupon", "snapshot_date"], name="coupon_snapshot_unique_per_day"),
        ]
        indexes = [models.Index(fields=["snapshot_date"], name="coupon_snapshot_date_idx")]

    def __str__(self):
        return f"{self.coupon_id} {self.snapshot_date}"
