from django.conf import settings
from django.db import models
from django.db.models import F, Q

from billing_project.enums import BillingCycle, SubscriptionTier
from billing_project.models import TimestampedModel, choices_check

MONEY = {"max_digits": 12, "decimal_places": 2}


class SubscriptionStatus(models.TextChoices):
    TRIAL = "trial"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    GRACE_PERIOD = "grace_period"
    SUSPENDED = "suspended"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


LIVE_STATUSES = (
    SubscriptionStatus.TRIAL,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.PAST_DUE,
    SubscriptionStatus.GRACE_PERIOD,
    SubscriptionStatus.SUSPENDED,
)


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


class PaymentStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"


class DunningResult(models.TextChoices):
    SCHEDULED = "scheduled"
    PROCESSING = "processing", "Processing (an asynchronous payment is in flight)"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ChangeType(models.TextChoices):
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"


class ProrationStatus(models.TextChoices):
    PENDING = "pending"
    APPLIED = "applied"
    FAILED = "failed"
    REVERSED = "reversed"


class TierConfig(TimestampedModel):
    """The catalog entry of a tier: price, monthly credits, entitlements, trial. Editable by staff."""

    tier = models.CharField(max_length=20, choices=SubscriptionTier.choices, unique=True)
    display_name = models.CharField(max_length=100)
    monthly_price_usd = models.DecimalField(**MONEY, help_text="USD per month.")
    annual_price_usd = models.DecimalField(**MONEY, help_text="USD per year.")
    one_time_price_usd = models.DecimalField(
        **MONEY, null=True, blank=True, help_text="USD once, for the perpetual license."
    )
    monthly_credit_allocation = models.PositiveIntegerField(help_text="Credits granted each month.")
    entitlements = models.JSONField(default=dict, blank=True)
    trial_days = models.PositiveSmallIntegerField(default=0)
    is_active = models.BooleanField(default=True)
    sort_order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["sort_order"]
        constraints = [
            choices_check("tier", SubscriptionTier),
            models.CheckConstraint(
                condition=Q(monthly_price_usd__gte=0) & Q(annual_price_usd__gte=0), name="tier_prices_not_negative"
            ),
        ]

    def __str__(self):
        return self.display_name

    def price_for(self, billing_cycle: str):
        return self.annual_price_usd if billing_cycle == BillingCycle.ANNUAL else self.monthly_price_usd


class Subscription(TimestampedModel):
    """A user's subscription (the seeds' SubscriptionMonetization). Invariant: at most one live
    subscription (trial, active, past_due, grace_period, suspended) per user; status changes follow
    the state machine of subscriptions.services.lifecycle."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscriptions", db_index=False
    )
    tier = models.CharField(max_length=20, choices=SubscriptionTier.choices)
    billing_cycle = models.CharField(max_length=10, choices=BillingCycle.choices, default=BillingCycle.MONTHLY)
    status = models.CharField(max_length=16, choices=SubscriptionStatus.choices)
    base_price_usd = models.DecimalField(**MONEY, help_text="USD per billing cycle.")
    monthly_credit_allocation = models.PositiveIntegerField()
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    trial_ends_at = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    cancel_at = models.DateTimeField(null=True, blank=True, help_text="When Stripe will end it (set on Stripe's side).")
    paused_at = models.DateTimeField(
        null=True, blank=True, help_text="Stripe paused it (no invoices, no paid access) until it resumes."
    )
    renewal_discount_usd = models.DecimalField(
        **MONEY, default=0, help_text="USD off the next renewal (a redeemed coupon); cleared when it renews."
    )
    cancelled_at = models.DateTimeField(null=True, blank=True)
    grace_period_ends_at = models.DateTimeField(null=True, blank=True)
    scheduled_tier = models.CharField(
        max_length=20, choices=SubscriptionTier.choices, blank=True, help_text="A downgrade due at period end."
    )
    stripe_customer_id = models.CharField(
        max_length=255,
        null=True,
        blank=True,
        help_text="Unique among live subscriptions: a returning customer keeps their Stripe customer.",
    )
    stripe_subscription_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    provider_updated_at = models.DateTimeField(
        null=True, blank=True, help_text="Creation time of the newest provider event applied (ordering guard)."
    )
    checkout_session_id = models.CharField(
        max_length=255, null=True, blank=True, unique=True, help_text="The paid checkout that started it."
    )
    trial_reminder_3d_sent_at = models.DateTimeField(null=True, blank=True)
    trial_reminder_1d_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            choices_check("tier", SubscriptionTier),
            choices_check("billing_cycle", BillingCycle),
            choices_check("status", SubscriptionStatus),
            choices_check("scheduled_tier", SubscriptionTier, allow_blank=True),
            models.UniqueConstraint(
                fields=["user"], condition=Q(status__in=LIVE_STATUSES), name="subscription_one_live_per_user"
            ),
            models.UniqueConstraint(
                fields=["stripe_customer_id"],
                condition=Q(status__in=LIVE_STATUSES),
                name="subscription_customer_one_live",
            ),
            models.CheckConstraint(
                condition=Q(current_period_end__gt=F("current_period_start")), name="subscription_period_ordered"
            ),
            models.CheckConstraint(condition=Q(base_price_usd__gte=0), name="subscription_price_not_negative"),
            models.CheckConstraint(
                condition=Q(renewal_discount_usd__gte=0), name="subscription_renewal_discount_not_negative"
            ),
        ]
        indexes = [
            models.Index(fields=["user", "current_period_end", "status"], name="subscription_user_period_idx"),
            models.Index(fields=["status", "current_period_end"], name="subscription_status_period_idx"),
            models.Index(fields=["status", "trial_ends_at"], name="subscription_trial_end_idx"),
            models.Index(fields=["status", "grace_period_ends_at"], name="subscription_grace_end_idx"),
            models.Index(fields=["stripe_customer_id"], name="subscription_customer_idx"),
        ]

    def __str__(self):
        return f"{self.tier} ({self.status})"


class BillingInvoice(TimestampedModel):
    """An invoice for a period. Survives its subscription (SET NULL) as a financial record."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invoices", db_index=False
    )
    subscription = models.ForeignKey(
        Subscription, null=True, blank=True, on_delete=models.SET_NULL, related_name="invoices", db_index=False
    )
    # The `_usd` amounts are the contract's names: exact for a USD invoice; for another currency they
    # hold that currency's amount to two places (never converted), and the exact amounts are the
    # minor-unit fields beside them.
    subtotal_usd = models.DecimalField(**MONEY, default=0)
    discount_usd = models.DecimalField(**MONEY, default=0)
    amount_due_usd = models.DecimalField(**MONEY, help_text="Due after discounts (USD; see amount_due).")
    amount_paid_usd = models.DecimalField(**MONEY, default=0, help_text="Paid (USD; see amount_paid).")
    amount_due = models.BigIntegerField(default=0, help_text="Due after discounts, in the minor units of currency.")
    amount_paid = models.BigIntegerField(default=0, help_text="Paid, in the minor units of currency.")
    currency = models.CharField(max_length=3, default="usd", help_text="ISO 4217 code, lower case.")
    status = models.CharField(max_length=16, choices=InvoiceStatus.choices, default=InvoiceStatus.OPEN)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    description = models.CharField(max_length=255, blank=True)
    stripe_invoice_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    number = models.CharField(
        max_length=100, blank=True, help_text="Stripe's invoice number, given when it finalizes the invoice."
    )
    hosted_invoice_url = models.URLField(
        max_length=500, blank=True, help_text="Stripe's page where the customer sees and pays the invoice."
    )
    invoice_pdf = models.URLField(max_length=500, blank=True, help_text="Stripe's PDF of the invoice.")
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            choices_check("status", InvoiceStatus),
            models.CheckConstraint(
                condition=Q(amount_due_usd__gte=0) & Q(amount_paid_usd__gte=0) & Q(discount_usd__gte=0),
                name="invoice_amounts_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(amount_due__gte=0) & Q(amount_paid__gte=0), name="invoice_minor_amounts_not_negative"
            ),
        ]
        indexes = [
            models.Index(fields=["user", "status", "period_end"], name="invoice_user_status_period_idx"),
            models.Index(fields=["user", "-period_end"], name="invoice_user_recent_idx"),
            models.Index(fields=["subscription", "period_start"], name="invoice_sub_period_idx"),
        ]

    def __str__(self):
        return f"{self.amount_due_usd} {self.currency} ({self.status})"


class PaymentTransaction(TimestampedModel):
    """A payment attempt or refund for an invoice."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="payments", db_index=False
    )
    invoice = models.ForeignKey(
        BillingInvoice, null=True, blank=True, on_delete=models.SET_NULL, related_name="payments"
    )
    subscription = models.ForeignKey(
        Subscription, null=True, blank=True, on_delete=models.SET_NULL, related_name="payments"
    )
    amount_usd = models.DecimalField(**MONEY, help_text="USD; for another currency its amount to two places.")
    refunded_amount_usd = models.DecimalField(**MONEY, default=0, help_text="As amount_usd.")
    amount = models.BigIntegerField(default=0, help_text="In the minor units of currency (cents, yen, fils).")
    refunded_amount = models.BigIntegerField(default=0, help_text="Refunded so far, in the same minor units.")
    currency = models.CharField(max_length=3, default="usd", help_text="ISO 4217 code, lower case.")
    status = models.CharField(max_length=20, choices=PaymentStatus.choices, default=PaymentStatus.PENDING)
    payment_method_type = models.CharField(max_length=32, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    stripe_charge_id = models.CharField(max_length=255, blank=True)
    failure_reason = models.TextField(blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            choices_check("status", PaymentStatus),
            models.CheckConstraint(
                condition=Q(amount_usd__gte=0)
                & Q(refunded_amount_usd__gte=0)
                & Q(refunded_amount_usd__lte=F("amount_usd")),
                name="payment_amounts_valid",
            ),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0) & Q(refunded_amount__lte=F("amount")),
                name="payment_minor_amounts_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["user", "created_at"], name="payment_user_time_idx"),
            models.Index(fields=["status", "created_at"], name="payment_status_time_idx"),
            models.Index(fields=["status", "completed_at"], name="payment_status_completed_idx"),
        ]

    def __str__(self):
        return f"{self.amount_usd} {self.currency} ({self.status})"

    @property
    def amount_refunded(self) -> int:
        """`refunded_amount` under payments.Payment's name: a refund reads either kind of payment alike."""
        return self.refunded_amount


class DunningAttempt(TimestampedModel):
    """A scheduled retry of a failed invoice payment (days 1, 3, 5, 7). Invariant: one row per
    (invoice, attempt number)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    invoice = models.ForeignKey(
        BillingInvoice, on_delete=models.CASCADE, related_name="dunning_attempts", db_index=False
    )
    subscription = models.ForeignKey(
        Subscription, null=True, blank=True, on_delete=models.SET_NULL, related_name="dunning_attempts"
    )
    attempt_number = models.PositiveSmallIntegerField()
    scheduled_at = models.DateTimeField()
    attempted_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=16, choices=DunningResult.choices, default=DunningResult.SCHEDULED)
    failure_reason = models.TextField(blank=True)

    class Meta:
        constraints = [
            choices_check("result", DunningResult),
            models.UniqueConstraint(fields=["invoice", "attempt_number"], name="dunning_attempt_unique_number"),
        ]
        indexes = [models.Index(fields=["result", "scheduled_at"], name="dunning_due_idx")]

    def __str__(self):
        return f"attempt {self.attempt_number} ({self.result})"


class UserEntitlement(TimestampedModel):
    """What a user may use now (features, devices, API access...), derived from their tier."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="entitlement")
    tier = models.CharField(max_length=20, choices=SubscriptionTier.choices)
    entitlements = models.JSONField(default=dict, blank=True)
    activated_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [choices_check("tier", SubscriptionTier)]

    def __str__(self):
        return f"{self.tier} entitlements"


class ProrationEvent(TimestampedModel):
    """A mid-period tier change and its numbers. Money rounded half-up to cents, credits down."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="proration_events", db_index=False
    )
    from_tier = models.CharField(max_length=20, choices=SubscriptionTier.choices)
    to_tier = models.CharField(max_length=20, choices=SubscriptionTier.choices)
    change_type = models.CharField(max_length=10, choices=ChangeType.choices)
    days_remaining = models.PositiveSmallIntegerField(help_text="Rounded for display; the maths uses seconds.")
    days_in_cycle = models.PositiveSmallIntegerField()
    unused_credit_value_usd = models.DecimalField(**MONEY)
    new_tier_prorated_cost_usd = models.DecimalField(**MONEY)
    net_charge_usd = models.DecimalField(**MONEY)
    credits_adjustment = models.IntegerField()
    effective_date = models.DateTimeField()
    status = models.CharField(max_length=10, choices=ProrationStatus.choices, default=ProrationStatus.PENDING)

    class Meta:
        constraints = [
            choices_check("from_tier", SubscriptionTier),
            choices_check("to_tier", SubscriptionTier),
            choices_check("change_type", ChangeType),
            choices_check("status", ProrationStatus),
        ]
        indexes = [
            models.Index(fields=["subscription", "effective_date", "status"], name="proration_sub_date_status_idx"),
        ]

    def __str__(self):
        return f"{self.from_tier} -> {self.to_tier} ({self.status})"
