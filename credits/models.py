"""Usage credits: vendor prices and margins, grants, the balance and the append-only ledgers.

The balance identity every operation keeps (proved by `manage.py verify_ledger`):
    balance.amount == sum(live grant remainders)
                   == allocations - deductions - expirations + reversals

References of the usage ledgers without a database constraint (LEDGER_REFERENCE, `db_constraint`
False): the usage row's user, deduction, provider and price, the deduction's user, the lineage row's
deduction and grant. PostgreSQL checks a constraint with a query per written row and reference, at
commit: seven per usage event, a quarter of a usage batch's database CPU (bench/RESULTS.md). What
they guaranteed holds without them. The one door writes these rows in the statement that writes or
updates what they name (the deduction, the grant), under the lock of the user's balance row, with
the provider and price it read. Deletions cascade as before: `on_delete` is the ORM's own (the
constraints Django makes check at commit and cascade nothing), so deleting a user (an erasure) or a
grant through the ORM deletes the rows that name it. What only a hand-written DELETE could leave, a
row naming a row that is gone, `verify_ledger` counts (`ledger_dangling_references`).
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from audit.models import AppendOnlyModel
from billing_project.enums import SubscriptionTier
from billing_project.models import TimestampedModel, choices_check

PRICE = {"max_digits": 24, "decimal_places": 16}
COST = {"max_digits": 20, "decimal_places": 10}
MULTIPLIER = {"max_digits": 6, "decimal_places": 4}
# Credits sits below subscriptions (SPEC 0): its rows keep a subscription's id, never a foreign key to it.
SUBSCRIPTION_ID_HELP = "The user's live subscription at the time (a plain id: the subscription may be gone)."
# A usage ledger's reference, not checked by the database on each written row (the docstring above).
LEDGER_REFERENCE = {"db_constraint": False}


class VendorName(models.TextChoices):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GOOGLE = "google"
    META = "meta"
    MISTRAL = "mistral"
    COHERE = "cohere"
    AZURE = "azure"
    OLLAMA = "ollama"
    OTHER = "other"


class MarginStrategy(models.TextChoices):
    FIXED_PERCENTAGE = "fixed_percentage"
    TIERED = "tiered"
    DYNAMIC = "dynamic"


class DeductionType(models.TextChoices):
    INFERENCE = "inference"
    EMBEDDING = "embedding"
    FINE_TUNING = "fine_tuning"
    CUSTOM = "custom"


class DeductionStatus(models.TextChoices):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class CreditSource(models.TextChoices):
    """Where an allocation of credits comes from."""

    SUBSCRIPTION = "subscription"
    BONUS = "bonus"
    REFERRAL = "referral"
    COUPON = "coupon"
    ADMIN_GRANT = "admin_grant"
    PRORATION = "proration"
    PURCHASE = "purchase"


# Why a ledger row lowers (or, for a reversal, restores) a balance: a usage type or a bookkeeping reason.
DeductionReason = models.TextChoices(
    "DeductionReason",
    [(member.name, member.value) for member in DeductionType]
    + [("EXPIRATION", "expiration"), ("ADMIN_ADJUSTMENT", "admin_adjustment"), ("REVERSAL", "reversal")],
)

# Where a spendable grant comes from: an allocation's source, or a reversed deduction.
GrantSource = models.TextChoices(
    "GrantSource", [(member.name, member.value) for member in CreditSource] + [("REVERSAL", "reversal")]
)


class HoldStatus(models.TextChoices):
    HELD = "held"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"


class RequestType(models.TextChoices):
    COMPLETION = "completion"
    CHAT = "chat"
    EMBEDDING = "embedding"
    FUNCTION_CALL = "function_call"


class ServiceTier(models.TextChoices):
    """The vendor's processing tier for a request; each may have its own prices."""

    STANDARD = "standard"
    BATCH = "batch"
    FLEX = "flex"
    PRIORITY = "priority"


class UsageFormat(models.TextChoices):
    """How the gateway reported a request's tokens (credits.usage_objects)."""

    FLAT = "flat"
    OPENAI_CHAT = "openai_chat"
    OPENAI_RESPONSES = "openai_responses"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


class UsageStatus(models.TextChoices):
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"


class PricingScope(models.TextChoices):
    TIER = "tier"
    PROVIDER = "provider"
    MODEL = "model"
    COMBINATION = "combination"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class MarginChange(models.TextChoices):
    CREATED = "created"
    APPROVED = "approved"
    REJECTED = "rejected"
    DEACTIVATED = "deactivated"


class Provider(TimestampedModel):
    """An LLM vendor the gateway calls."""

    name = models.CharField(max_length=100, unique=True, help_text="Stable identifier, e.g. 'openai'.")
    display_name = models.CharField(max_length=100, blank=True)
    api_type = models.CharField(max_length=16, choices=VendorName.choices)
    vendor_family = models.CharField(
        max_length=50,
        blank=True,
        help_text="The company behind the provider, for reports: 'azure' for both azure and azure_ai.",
    )
    is_enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [choices_check("api_type", VendorName)]
        indexes = [models.Index(fields=["is_enabled"], name="provider_enabled_idx")]

    def __str__(self):
        return self.name


# The per-token prices of a model, one column per canonical token component (USD per 1,000 tokens).
PER_1K_PRICE_FIELDS = (
    "input_price_per_1k",
    "output_price_per_1k",
    "cache_input_price_per_1k",
    "cache_hit_price_per_1k",
    "cache_write_1h_price_per_1k",
    "reasoning_price_per_1k",
    "audio_input_price_per_1k",
    "audio_output_price_per_1k",
    "image_output_price_per_1k",
)


class ModelProviderPricing(TimestampedModel):
    """A vendor's price for one model over a period. Invariant: for a (provider, model, region) the
    periods [effective_from, effective_until) do not overlap; prices are USD per 1,000 tokens of each
    canonical component (credits.usage_objects), a missing one taking its parent's (credits.pricing).
    A model whose prices are all zero is explicitly free."""

    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="model_prices", db_index=False)
    model_name = models.CharField(max_length=255)
    region = models.CharField(
        max_length=50,
        blank=True,
        help_text="Empty: any region. Else this price applies to requests reported with this region "
        "(e.g. Azure's 'eu' data zone), before the any-region price.",
    )
    vendor_model_id = models.CharField(max_length=255, blank=True)
    input_price_per_1k = models.DecimalField(**PRICE, help_text="USD per 1,000 input tokens.")
    output_price_per_1k = models.DecimalField(**PRICE, help_text="USD per 1,000 output tokens.")
    cache_input_price_per_1k = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="USD per 1,000 tokens written to the prompt cache."
    )
    cache_hit_price_per_1k = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="USD per 1,000 tokens read from the prompt cache."
    )
    cache_write_1h_price_per_1k = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="USD per 1,000 tokens written to the cache with a 1-hour TTL."
    )
    reasoning_price_per_1k = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="USD per 1,000 reasoning tokens (empty: the output price)."
    )
    audio_input_price_per_1k = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="USD per 1,000 audio input tokens (empty: the input price)."
    )
    audio_output_price_per_1k = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="USD per 1,000 audio output tokens (empty: the output price)."
    )
    image_output_price_per_1k = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="USD per 1,000 generated image tokens (empty: the output price)."
    )
    context_tiers = models.JSONField(
        default=list,
        blank=True,
        help_text='Above a request input size, the whole request takes these prices: [{"above_tokens": 200000, '
        '"prices": {"input": "0.0025", "output": "0.015"}}] (USD per 1,000 tokens by component).',
    )
    service_tiers = models.JSONField(
        default=dict,
        blank=True,
        help_text='Prices of the batch, flex and priority tiers: {"batch": {"prices": {...}, "context_tiers": [...]}}.',
    )
    request_fees = models.JSONField(
        default=dict, blank=True, help_text='USD per unit of per-request fees: {"web_search": "0.01"}.'
    )
    effective_from = models.DateTimeField()
    effective_until = models.DateTimeField(null=True, blank=True)
    previous_price_input = models.DecimalField(**PRICE, null=True, blank=True)
    previous_price_output = models.DecimalField(**PRICE, null=True, blank=True)
    price_change_percent_input = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)
    price_change_percent_output = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)
    detected_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    last_verified = models.DateTimeField(null=True, blank=True)
    verification_frequency_days = models.PositiveSmallIntegerField(default=7)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "model_name", "region", "effective_from"], name="model_price_unique_per_start"
            ),
            models.CheckConstraint(
                condition=Q(input_price_per_1k__gte=0) & Q(output_price_per_1k__gte=0),
                name="model_price_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(effective_until__isnull=True) | Q(effective_until__gt=F("effective_from")),
                name="model_price_period_ordered",
            ),
        ]
        indexes = [
            models.Index(fields=["provider", "model_name", "is_active"], name="model_price_lookup_idx"),
            models.Index(fields=["effective_from", "effective_until"], name="model_price_period_idx"),
        ]

    def __str__(self):
        region = f" ({self.region})" if self.region else ""
        return f"{self.provider_id}/{self.model_name}{region} from {self.effective_from:%Y-%m-%d}"


class PricingConfig(TimestampedModel):
    """A margin multiplier for a scope. Only active, approved configs in effect count; the most
    specific scope wins (combination > model > provider > tier > DEFAULT_MARGIN_MULTIPLIER).
    Invariant: the approver is never the creator."""

    scope_type = models.CharField(max_length=16, choices=PricingScope.choices)
    subscription_tier = models.CharField(max_length=20, choices=SubscriptionTier.choices, blank=True)
    provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.PROTECT, related_name="pricing_configs", db_index=False
    )
    model_name = models.CharField(max_length=255, blank=True)
    margin_strategy = models.CharField(
        max_length=20, choices=MarginStrategy.choices, default=MarginStrategy.FIXED_PERCENTAGE
    )
    margin_multiplier = models.DecimalField(**MULTIPLIER, help_text="Credit value = vendor cost x multiplier.")
    target_gross_margin_percent = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)
    effective_from = models.DateTimeField()
    effective_until = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=50)
    reason_details = models.TextField(blank=True)
    previous_multiplier = models.DecimalField(**MULTIPLIER, null=True, blank=True)
    change_percent = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)
    expected_margin_change_usd = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    expected_revenue_impact_usd = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    requires_approval = models.BooleanField(default=True)
    approval_status = models.CharField(max_length=16, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    is_active = models.BooleanField(default=True)
    monitored = models.BooleanField(default=True)

    class Meta:
        constraints = [
            choices_check("scope_type", PricingScope),
            choices_check("subscription_tier", SubscriptionTier, allow_blank=True),
            choices_check("margin_strategy", MarginStrategy),
            choices_check("approval_status", ApprovalStatus),
            models.CheckConstraint(condition=Q(margin_multiplier__gt=0), name="pricing_multiplier_positive"),
            models.CheckConstraint(
                condition=(
                    Q(scope_type=PricingScope.TIER, provider__isnull=True, model_name="") & ~Q(subscription_tier="")
                )
                | Q(scope_type=PricingScope.PROVIDER, subscription_tier="", provider__isnull=False, model_name="")
                | (Q(scope_type=PricingScope.MODEL, subscription_tier="") & ~Q(model_name=""))
                | (
                    Q(scope_type=PricingScope.COMBINATION, provider__isnull=False)
                    & ~Q(subscription_tier="")
                    & ~Q(model_name="")
                ),
                name="pricing_scope_fields_match",
            ),
            models.CheckConstraint(
                condition=Q(approved_by__isnull=True) | Q(created_by__isnull=True) | ~Q(approved_by=F("created_by")),
                name="pricing_approver_is_not_creator",
            ),
        ]
        indexes = [
            models.Index(fields=["scope_type", "approval_status", "is_active"], name="pricing_scope_status_idx"),
            models.Index(fields=["subscription_tier", "is_active"], name="pricing_tier_active_idx"),
            models.Index(fields=["provider", "is_active"], name="pricing_provider_active_idx"),
            models.Index(fields=["is_active", "effective_from"], name="pricing_active_from_idx"),
        ]

    def __str__(self):
        return f"{self.scope_type} x{self.margin_multiplier} ({self.approval_status})"


class MarginAuditLog(AppendOnlyModel):
    """Every change of a margin multiplier: who, from what, to what, why. Append-only."""

    pricing_config = models.ForeignKey(
        PricingConfig, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_entries", db_index=False
    )
    change_type = models.CharField(max_length=16, choices=MarginChange.choices)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    old_multiplier = models.DecimalField(**MULTIPLIER, null=True, blank=True)
    new_multiplier = models.DecimalField(**MULTIPLIER, null=True, blank=True)
    reason = models.TextField(blank=True)
    scope = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [choices_check("change_type", MarginChange)]
        indexes = [models.Index(fields=["pricing_config", "created_at"], name="margin_audit_config_time_idx")]

    def __str__(self):
        return f"{self.change_type} {self.old_multiplier} -> {self.new_multiplier}"


class CreditAllocation(AppendOnlyModel):
    """Credits added to a user's account. Append-only; invariant: a subscription's period is
    allocated at most once per source (unique constraint)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_allocations", db_index=False
    )
    subscription_id = models.UUIDField(
        null=True, blank=True, help_text="The subscription these credits come with (a plain id: it may be gone)."
    )
    amount = models.PositiveIntegerField(help_text="Credits (1 credit = CREDIT_VALUE_USD).")
    source = models.CharField(max_length=16, choices=CreditSource.choices)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: the credits never expire.")
    applied_to_balance_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    payment_operation_id = models.UUIDField(
        null=True,
        blank=True,
        unique=True,
        help_text="The payment these credits were bought with (payments.PaymentOperation; a plain id, "
        "unique: a payment grants its credits once).",
    )

    class Meta:
        constraints = [
            choices_check("source", CreditSource),
            models.CheckConstraint(condition=Q(amount__gt=0), name="allocation_amount_positive"),
            models.UniqueConstraint(
                fields=["subscription_id", "period_start", "source"],
                condition=Q(subscription_id__isnull=False),
                name="allocation_once_per_period",
            ),
        ]
        indexes = [
            models.Index(fields=["user", "created_at"], name="allocation_user_time_idx"),
            models.Index(fields=["source", "created_at"], name="allocation_source_time_idx"),
        ]

    def __str__(self):
        return f"+{self.amount} {self.source}"


class UserCreditBalance(TimestampedModel):
    """A user's spendable credits, and the tier their usage is priced at. The row is the lock: every
    change goes through credits.services.accounts.LockedAccount, which selects it FOR UPDATE and
    writes it with its ledger rows in the same transaction. Invariant: amount == sum of live grant
    remainders; tier and subscription_id are what subscriptions last pushed (credits.services.account_tier_set)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_balance")
    amount = models.IntegerField(default=0, help_text="Credits.")
    last_deduction_at = models.DateTimeField(null=True, blank=True)
    last_deduction_amount = models.IntegerField(null=True, blank=True)
    tier = models.CharField(
        max_length=20,
        choices=SubscriptionTier.choices,
        default=SubscriptionTier.FREE,
        help_text="The user's tier as subscriptions last set it.",
    )
    subscription_id = models.UUIDField(
        null=True, blank=True, help_text="The user's live subscription as subscriptions last set it (a plain id)."
    )
    auto_recharge_below = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Credits: the user's auto-recharge threshold while it is enabled and not paused (empty: off). "
        "Kept here so a deduction knows, from the row it locks, that it should queue a recharge.",
    )
    # The monthly budget and its month's spend live on the locked row, so a hard limit is exactly as
    # strict under concurrency as the balance itself (see credits.budgets).
    budget_monthly_credits = models.PositiveIntegerField(
        null=True, blank=True, help_text="Credits the user allows themself per calendar month (UTC); empty: no budget."
    )
    budget_hard_limit = models.BooleanField(
        default=False, help_text="Refuse usage (402 budget_exceeded) that would spend past the budget."
    )
    budget_month = models.CharField(
        max_length=7, blank=True, help_text="The month (YYYY-MM, UTC) budget_spent and budget_notified_percent count."
    )
    budget_spent = models.PositiveIntegerField(
        default=0, help_text="Credits spent on usage in budget_month, less the reversals of that month's usage."
    )
    budget_notified_percent = models.PositiveSmallIntegerField(
        default=0, help_text="The highest budget threshold (50, 80, 100 %) already notified in budget_month."
    )
    balance_alerts_armed_by = models.UUIDField(
        null=True, blank=True, help_text="The grant that last re-armed the low-balance and depleted notifications."
    )
    low_balance_notified = models.BooleanField(
        default=False, help_text="The low-balance notification went out since the last re-arming grant."
    )
    depleted_notified = models.BooleanField(
        default=False, help_text="The depleted-balance notification went out since the last re-arming grant."
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="balance_not_negative"),
            choices_check("tier", SubscriptionTier),
            models.CheckConstraint(
                condition=Q(budget_hard_limit=False) | Q(budget_monthly_credits__gt=0), name="hard_limit_has_budget"
            ),
        ]

    def __str__(self):
        return f"{self.amount} credits"


class UserCreditSource(TimestampedModel):
    """A grant: credits from one allocation (or reversal) and what is left of them.
    Invariant: 0 <= remaining <= original_amount; spent soonest-expiring first, never-expiring last."""

    # No index of its own: grant_user_expiry_idx leads with the user. Every index costs each grant
    # insert; no index reads `remaining`, so the change of it that each debit makes is a HOT update.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_sources", db_index=False
    )
    source = models.CharField(max_length=16, choices=GrantSource.choices)
    original_amount = models.PositiveIntegerField()
    remaining = models.PositiveIntegerField()
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    expired_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the expiry job closed it: zeroed what was left, or found it spent before its expiry.",
    )
    allocation = models.ForeignKey(
        CreditAllocation, null=True, blank=True, on_delete=models.CASCADE, related_name="grants"
    )
    reversal_of = models.OneToOneField(
        "credits.CreditDeductionLedger",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="restored_grant",
    )

    class Meta:
        constraints = [
            choices_check("source", GrantSource),
            models.CheckConstraint(
                condition=Q(remaining__lte=F("original_amount")), name="grant_remaining_within_original"
            ),
            models.CheckConstraint(
                condition=Q(allocation__isnull=False) | Q(reversal_of__isnull=False), name="grant_has_origin"
            ),
        ]
        indexes = [
            models.Index(fields=["user", "expires_at"], name="grant_user_expiry_idx"),
            models.Index(fields=["expires_at"], condition=Q(expired_at__isnull=True), name="grant_open_expiry_idx"),
        ]

    def __str__(self):
        return f"{self.remaining}/{self.original_amount} {self.source}"


class CreditDeductionLedger(AppendOnlyModel):
    """Every change that lowers a balance, and every reversal that restores one. Immutable: a
    reversal is a new row (reason `reversal`, `reverses` -> the original), never an edit.
    Invariant: balance_after = balance_before - amount (+ amount for a reversal)."""

    # No index of its own: deduction_user_time_idx leads with the user. Every index costs each ledger insert.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="credit_deductions",
        db_index=False,
        **LEDGER_REFERENCE,
    )
    subscription_id = models.UUIDField(null=True, blank=True, help_text=SUBSCRIPTION_ID_HELP)
    amount = models.PositiveIntegerField(help_text="Credits.")
    balance_before = models.IntegerField()
    balance_after = models.IntegerField()
    request_id = models.UUIDField(null=True, blank=True, unique=True)
    token_vendor_cost = models.DecimalField(**COST, null=True, blank=True)
    margin_multiplier = models.DecimalField(**MULTIPLIER, null=True, blank=True)
    gross_margin = models.DecimalField(**COST, null=True, blank=True)
    reason = models.CharField(max_length=20, choices=DeductionReason.choices)
    status = models.CharField(max_length=16, choices=DeductionStatus.choices, default=DeductionStatus.COMPLETED)
    # At most one reversal per deduction: deduction_reversed_once, unique where set (a one-to-one
    # field's index would hold every deduction's empty value).
    reverses = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    reversed_at = models.DateTimeField(null=True, blank=True)
    # Indexed only where set (deduction_reversed_by_idx): empty on all but reversals.
    reversed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    reversal_reason = models.TextField(blank=True)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            choices_check("reason", DeductionReason),
            choices_check("status", DeductionStatus),
            models.CheckConstraint(condition=Q(amount__gt=0), name="deduction_amount_positive"),
            models.CheckConstraint(condition=Q(balance_after__gte=0), name="deduction_balance_not_negative"),
            models.CheckConstraint(
                condition=(
                    Q(
                        reason=DeductionReason.REVERSAL,
                        reverses__isnull=False,
                        balance_after=F("balance_before") + F("amount"),
                    )
                    | (
                        ~Q(reason=DeductionReason.REVERSAL)
                        & Q(reverses__isnull=True, balance_after=F("balance_before") - F("amount"))
                    )
                ),
                name="deduction_balance_arithmetic",
            ),
            models.UniqueConstraint(
                fields=["reverses"], condition=Q(reverses__isnull=False), name="deduction_reversed_once"
            ),
        ]
        indexes = [
            models.Index(fields=["user", "created_at"], name="deduction_user_time_idx"),
            models.Index(fields=["reason", "created_at"], name="deduction_reason_time_idx"),
            # The staff list (admin/credits/deductions/): newest first, or a date range, of all users.
            models.Index(fields=["created_at", "id"], name="deduction_time_idx"),
            # Erasing a staff member empties the field where it names them (SET_NULL).
            models.Index(
                fields=["reversed_by"], condition=Q(reversed_by__isnull=False), name="deduction_reversed_by_idx"
            ),
        ]

    def __str__(self):
        sign = "+" if self.reason == DeductionReason.REVERSAL else "-"
        return f"{sign}{self.amount} {self.reason}"


class CreditConsumption(AppendOnlyModel):
    """Lineage: which grants paid for which deduction. Invariant: the rows of a deduction sum to its amount."""

    deduction = models.ForeignKey(
        CreditDeductionLedger, on_delete=models.CASCADE, related_name="consumptions", **LEDGER_REFERENCE
    )
    source = models.ForeignKey(
        UserCreditSource, on_delete=models.CASCADE, related_name="consumptions", **LEDGER_REFERENCE
    )
    amount = models.PositiveIntegerField()

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="consumption_amount_positive")]

    def __str__(self):
        return f"{self.amount} from {self.source_id}"


class CreditHold(TimestampedModel):
    """Credits reserved before a streaming LLM call. Invariant: spendable = balance - live holds,
    so concurrent calls never together spend more than the balance."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_holds")
    hold_id = models.UUIDField(unique=True)
    amount = models.PositiveIntegerField(help_text="Credits held.")
    captured_amount = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=HoldStatus.choices, default=HoldStatus.HELD)
    expires_at = models.DateTimeField()
    request_id = models.UUIDField(null=True, blank=True)

    class Meta:
        constraints = [
            choices_check("status", HoldStatus),
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
        ]
        indexes = [
            models.Index(fields=["user", "expires_at"], condition=Q(status="held"), name="hold_live_user_idx"),
            models.Index(fields=["expires_at"], condition=Q(status="held"), name="hold_live_expiry_idx"),
        ]

    def __str__(self):
        return f"hold {self.amount} ({self.status})"


class TokenUsageLedger(AppendOnlyModel):
    """One row per LLM request: tokens, vendor cost, margin and credits charged. Immutable;
    `request_id` is unique, which makes recording idempotent."""

    request_id = models.UUIDField(unique=True)
    # user and provider have no index of their own: usage_user_time_idx and usage_provider_time_idx lead
    # with them. Every index costs each ledger insert.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="token_usage",
        db_index=False,
        **LEDGER_REFERENCE,
    )
    subscription_id = models.UUIDField(null=True, blank=True, help_text=SUBSCRIPTION_ID_HELP)
    provider = models.ForeignKey(
        Provider, on_delete=models.PROTECT, related_name="usage", db_index=False, **LEDGER_REFERENCE
    )
    model_name = models.CharField(max_length=255)
    pricing = models.ForeignKey(
        ModelProviderPricing, null=True, blank=True, on_delete=models.PROTECT, related_name="usage", **LEDGER_REFERENCE
    )
    # Token counts as the flat fields define them (credits.usage_objects): input_tokens and
    # output_tokens are totals, the others parts of them. Rows with an empty usage_format were
    # recorded before that meaning: their input_tokens exclude the cache tokens.
    input_tokens = models.PositiveBigIntegerField(help_text="Every input token, cached or not.")
    output_tokens = models.PositiveBigIntegerField(help_text="Every output token, reasoning included.")
    cached_input_tokens = models.PositiveBigIntegerField(default=0, help_text="Input tokens read from the cache.")
    cache_write_tokens = models.PositiveBigIntegerField(
        default=0, help_text="Input tokens written to the prompt cache (5-minute TTL)."
    )
    cache_write_1h_tokens = models.PositiveBigIntegerField(
        default=0, help_text="Input tokens written to the prompt cache with a 1-hour TTL."
    )
    audio_input_tokens = models.PositiveBigIntegerField(default=0, help_text="Audio input tokens (uncached).")
    reasoning_tokens = models.PositiveBigIntegerField(default=0, help_text="Reasoning output tokens.")
    audio_output_tokens = models.PositiveBigIntegerField(default=0, help_text="Audio output tokens.")
    image_output_tokens = models.PositiveBigIntegerField(default=0, help_text="Generated image tokens.")
    total_tokens = models.PositiveBigIntegerField()
    usage_format = models.CharField(
        max_length=20, choices=UsageFormat.choices, blank=True, help_text="How the gateway reported the tokens."
    )
    service_tier = models.CharField(max_length=16, choices=ServiceTier.choices, default=ServiceTier.STANDARD)
    fee_units = models.JSONField(default=dict, blank=True, help_text='Units of per-request fees: {"web_search": 2}.')
    vendor_cost = models.DecimalField(**COST, help_text="USD the vendor charges.")
    margin_multiplier = models.DecimalField(**MULTIPLIER)
    credit_value_usd = models.DecimalField(**COST, help_text="USD value charged: vendor cost x margin.")
    credits_deducted = models.PositiveIntegerField()
    balance_after = models.IntegerField(null=True, blank=True, help_text="The user's balance once recorded.")
    gross_margin_usd = models.DecimalField(**COST)
    request_type = models.CharField(max_length=16, choices=RequestType.choices)
    streaming_segments = models.PositiveBigIntegerField(null=True, blank=True)
    request_started_at = models.DateTimeField()
    request_completed_at = models.DateTimeField()
    processing_time_ms = models.PositiveBigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=UsageStatus.choices, default=UsageStatus.SUCCESS)
    error_message = models.TextField(blank=True)
    is_streaming_complete = models.BooleanField(default=True)
    is_byok = models.BooleanField(default=False, help_text="Recorded at zero cost: the user brings their own key.")
    user_tier_at_request = models.CharField(max_length=20, blank=True)
    region = models.CharField(max_length=50, blank=True)
    hold_id = models.UUIDField(null=True, blank=True, help_text="The reservation this request captured.")
    deduction = models.OneToOneField(
        CreditDeductionLedger,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage",
        **LEDGER_REFERENCE,
    )

    class Meta:
        constraints = [
            choices_check("request_type", RequestType),
            choices_check("status", UsageStatus),
            choices_check("service_tier", ServiceTier),
            choices_check("usage_format", UsageFormat, allow_blank=True),
        ]
        indexes = [
            models.Index(fields=["user", "created_at"], name="usage_user_time_idx"),
            models.Index(fields=["model_name", "created_at"], name="usage_model_time_idx"),
            models.Index(fields=["provider", "created_at"], name="usage_provider_time_idx"),
            models.Index(fields=["created_at"], name="usage_time_idx"),
            # The admin's status filter looks for the few calls not fully successful; successful ones
            # (nearly all) are listed by usage_time_idx, and are kept out of this index's every insert.
            models.Index(
                fields=["status", "created_at"],
                condition=~Q(status=UsageStatus.SUCCESS),
                name="usage_unsuccessful_time_idx",
            ),
        ]

    def __str__(self):
        return f"{self.model_name} {self.credits_deducted} credits"


class TokenUsageDailySummary(TimestampedModel):
    """Per user and day, rebuilt idempotently from TokenUsageLedger."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    summary_date = models.DateField()
    total_requests = models.PositiveIntegerField(default=0)
    total_input_tokens = models.BigIntegerField(default=0)
    total_output_tokens = models.BigIntegerField(default=0)
    total_vendor_cost = models.DecimalField(**COST, default=0)
    total_credits_deducted = models.BigIntegerField(default=0)
    total_gross_margin = models.DecimalField(**COST, default=0)
    avg_request_latency_ms = models.PositiveBigIntegerField(null=True, blank=True)
    success_rate = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)

    class Meta:
        verbose_name_plural = "token usage daily summaries"
        constraints = [
            models.UniqueConstraint(fields=["user", "summary_date"], name="token_summary_unique_per_day"),
        ]
        indexes = [models.Index(fields=["summary_date"], name="token_summary_date_idx")]

    def __str__(self):
        return f"{self.user_id} {self.summary_date}"


class CreditUsageDailySummary(TimestampedModel):
    """Per user and day, rebuilt idempotently from the credit ledgers."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    summary_date = models.DateField()
    total_deductions = models.BigIntegerField(default=0, help_text="Credits spent.")
    total_requests = models.PositiveIntegerField(default=0)
    total_vendor_cost = models.DecimalField(**COST, default=0)
    total_gross_margin = models.DecimalField(**COST, default=0)
    total_credits_granted = models.BigIntegerField(default=0)
    total_credits_expired = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "credit usage daily summaries"
        constraints = [
            models.UniqueConstraint(fields=["user", "summary_date"], name="credit_summary_unique_per_day"),
        ]
        indexes = [models.Index(fields=["summary_date"], name="credit_summary_date_idx")]

    def __str__(self):
        return f"{self.user_id} {self.summary_date}"


class CreditPack(TimestampedModel):
    """Credits a customer can buy once (`credits/purchase/`) or have bought for them by auto-recharge.
    A pack already sold is never repriced in place: its purchases keep the amounts they were sold at
    on their payment operation, so staff retire a pack (is_active off) and add a new one."""

    name = models.CharField(max_length=100)
    credits = models.PositiveIntegerField(help_text="Credits granted per purchase.")
    price = models.DecimalField(max_digits=12, decimal_places=2, help_text="In the currency's major unit.")
    currency = models.CharField(max_length=3, default="usd", help_text="ISO 4217 code, lower case.")
    credit_expiry_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Purchased credits expire this many days after purchase (empty: never)."
    )
    is_active = models.BooleanField(default=True, help_text="Offered for purchase and auto-recharge.")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(credits__gt=0), name="credit_pack_credits_positive"),
            models.CheckConstraint(condition=Q(price__gt=0), name="credit_pack_price_positive"),
            models.CheckConstraint(condition=Q(currency__regex=r"^[a-z]{3}$"), name="credit_pack_currency_code"),
        ]
        indexes = [models.Index(fields=["is_active", "price"], name="credit_pack_offer_idx")]

    def __str__(self):
        return f"{self.name} ({self.credits} credits)"


class AutoRecharge(TimestampedModel):
    """A user's auto-recharge: when a deduction leaves their spendable credits below `threshold`, one
    `credit_recharge` payment operation charges their saved card for `pack` (credits.services.recharge).

    Invariants: one row per user; at most one unfinished recharge operation per row (the row is the
    operation's subject, and payments allows one unfinished charge per subject); the money charged by
    the recharges of a calendar month (UTC), succeeded or in flight, never exceeds `monthly_cap`; the
    user's balance row carries `threshold` in `auto_recharge_below` exactly while the row is enabled and
    not paused (both are changed together, under the lock of this row and then of the balance)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="auto_recharge")
    enabled = models.BooleanField(default=False)
    threshold = models.PositiveIntegerField(help_text="Credits: a recharge is due below this spendable balance.")
    pack = models.ForeignKey(CreditPack, on_delete=models.PROTECT, related_name="auto_recharges")
    monthly_cap = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        help_text="Most money auto-recharge may charge per calendar month (UTC), in the pack's currency.",
    )
    consecutive_failures = models.PositiveSmallIntegerField(
        default=0, help_text="Recharges declined or waiting for the customer since the last one that succeeded."
    )
    paused_at = models.DateTimeField(
        null=True, blank=True, help_text="Paused after AUTO_RECHARGE_MAX_FAILURES failures; enabling again resumes it."
    )
    pause_reason = models.CharField(max_length=255, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(monthly_cap__gte=0), name="auto_recharge_cap_not_negative"),
        ]
        indexes = [models.Index(fields=["enabled", "paused_at"], name="auto_recharge_state_idx")]

    def __str__(self):
        return f"auto-recharge below {self.threshold} credits"
