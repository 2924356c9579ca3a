from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing_project.fields import DateField, DateTimeField
from credits import selectors
from credits.models import (
    PER_1K_PRICE_FIELDS,
    CreditDeductionLedger,
    CreditPack,
    CreditSource,
    GrantSource,
    ModelProviderPricing,
    PricingConfig,
    PricingScope,
    Provider,
    RequestType,
    ServiceTier,
    TokenUsageLedger,
    UsageFormat,
)
from credits.services.grants import GRANTABLE_BY_STAFF
from credits.usage_objects import MAX_FEE_UNITS, MAX_TOKENS

TOKENS = {"min_value": 0, "max_value": MAX_TOKENS}


# The documented shape of a usage event: requests are parsed by credits.api.events, which applies these
# rules faster (a test keeps the two in step).
class UsageEventInput(serializers.Serializer):
    """One LLM request as the gateway reports it.

    Tokens come either as the flat fields (`usage_format` `flat`, the default) or as the provider's
    usage object verbatim in `usage`, with `usage_format` naming its shape. Flat fields: `input_tokens`
    counts every input token, cached or not, and `cached_input_tokens`, `cache_write_tokens`,
    `cache_write_1h_tokens` and `audio_input_tokens` are parts of it (their sum may not exceed it);
    `output_tokens` counts every output token and `reasoning_tokens`, `audio_output_tokens` and
    `image_output_tokens` are parts of it. Cached tokens are priced once, at the cache price."""

    request_id = serializers.UUIDField()
    user_id = serializers.IntegerField(min_value=1)
    provider = serializers.CharField(max_length=100)
    model = serializers.CharField(max_length=255)
    usage_format = serializers.ChoiceField(
        choices=UsageFormat.choices,
        default=UsageFormat.FLAT,
        help_text="flat (the token fields below), or the shape of `usage`: openai_chat (Chat Completions), "
        "openai_responses (Responses API), anthropic (Messages), gemini (usageMetadata).",
    )
    usage = serializers.DictField(
        required=False,
        help_text="The provider's usage object, verbatim (with a usage_format other than flat; then no flat "
        "token fields). Its fields are checked as the vendor documents them; an error names the nested field "
        "with dots, e.g. usage.prompt_tokens_details.cached_tokens.",
    )
    input_tokens = serializers.IntegerField(
        **TOKENS,
        required=False,
        help_text="Every input token of the request, cached or not (required in the flat format).",
    )
    output_tokens = serializers.IntegerField(
        **TOKENS,
        required=False,
        help_text="Every output token, reasoning, audio and image included (required in the flat format).",
    )
    cached_input_tokens = serializers.IntegerField(
        **TOKENS, default=0, help_text="Part of input_tokens: read from the prompt cache."
    )
    cache_write_tokens = serializers.IntegerField(
        **TOKENS, default=0, help_text="Part of input_tokens: written to the prompt cache (5-minute TTL)."
    )
    cache_write_1h_tokens = serializers.IntegerField(
        **TOKENS, default=0, help_text="Part of input_tokens: written to the prompt cache with a 1-hour TTL."
    )
    audio_input_tokens = serializers.IntegerField(**TOKENS, default=0, help_text="Part of input_tokens: audio.")
    reasoning_tokens = serializers.IntegerField(**TOKENS, default=0, help_text="Part of output_tokens: reasoning.")
    audio_output_tokens = serializers.IntegerField(**TOKENS, default=0, help_text="Part of output_tokens: audio.")
    image_output_tokens = serializers.IntegerField(
        **TOKENS, default=0, help_text="Part of output_tokens: generated image tokens."
    )
    service_tier = serializers.ChoiceField(
        choices=ServiceTier.choices,
        default=ServiceTier.STANDARD,
        help_text="The vendor's processing tier; a model without prices for it is charged its standard prices.",
    )
    fee_units = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=MAX_FEE_UNITS),
        required=False,
        help_text='Units of per-request fees, e.g. {"web_search": 2}; an Anthropic usage object\'s '
        "server_tool_use.web_search_requests adds to web_search. A fee the model has no price for is a 422.",
    )
    request_type = serializers.ChoiceField(choices=RequestType.choices)
    request_started_at = DateTimeField()
    request_completed_at = DateTimeField(help_text="At most 31 days after request_started_at.")
    hold_id = serializers.UUIDField(required=False, allow_null=True, help_text="Captures this reservation.")
    streaming_segments = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    region = serializers.CharField(
        max_length=50,
        required=False,
        allow_blank=True,
        default="",
        help_text="Where the vendor served the request (e.g. 'eu'); a model's price for that region applies first.",
    )


class UsageRecordOutput(serializers.Serializer):
    request_id = serializers.UUIDField()
    status = serializers.CharField(help_text="success, or partial when a hold and the balance covered less.")
    credits_deducted = serializers.IntegerField()
    balance_after = serializers.IntegerField()
    vendor_cost = serializers.CharField(help_text="USD, as a decimal string.")
    credit_value_usd = serializers.CharField(help_text="USD, as a decimal string.")
    margin_multiplier = serializers.CharField()
    byok = serializers.BooleanField()
    hold_id = serializers.UUIDField(allow_null=True)
    deduction_id = serializers.UUIDField(
        allow_null=True,
        help_text="The deduction that took the credits (none at zero cost): staff reverse it by this id.",
    )


class UsageBatchInput(serializers.Serializer):
    """1 to 1,000 usage events, each as `usage/record/` takes it."""

    # The documented shape: the view checks the envelope and parses each event itself.

    events = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=1000)


class UsageBatchResult(serializers.Serializer):
    index = serializers.IntegerField()
    request_id = serializers.CharField(allow_null=True)
    status = serializers.IntegerField(help_text="The HTTP status this event alone would have had.")
    code = serializers.CharField(required=False, help_text="For a refusal: the problem code.")
    detail = serializers.CharField(required=False)
    errors = serializers.DictField(required=False, help_text="For a malformed event: per-field errors.")
    result = UsageRecordOutput(required=False)


class UsageBatchOutput(serializers.Serializer):
    results = UsageBatchResult(many=True)


class CreditCheckInput(serializers.Serializer):
    user_id = serializers.IntegerField(min_value=1)
    estimated_credits = serializers.IntegerField(min_value=0)


class CreditCheckOutput(serializers.Serializer):
    allowed = serializers.BooleanField()
    reason = serializers.ChoiceField(
        choices=["insufficient_credits", "budget_exceeded"],
        allow_null=True,
        help_text="Why not, when not allowed: the problem code usage/record would answer.",
    )
    balance = serializers.IntegerField()
    available = serializers.IntegerField(help_text="Balance minus live holds.")
    budget_available = serializers.IntegerField(
        allow_null=True, help_text="What the hard monthly budget still allows (live holds counted); null: no limit."
    )


class HoldReserveInput(serializers.Serializer):
    user_id = serializers.IntegerField(min_value=1)
    estimated_credits = serializers.IntegerField(min_value=1)
    hold_id = serializers.UUIDField(required=False, allow_null=True)


class HoldOutput(serializers.Serializer):
    hold_id = serializers.UUIDField()
    status = serializers.CharField()
    held = serializers.IntegerField()
    available = serializers.IntegerField(required=False)
    expires_at = serializers.DateTimeField()


class HoldReleaseInput(serializers.Serializer):
    hold_id = serializers.UUIDField()


class GrantOutput(serializers.Serializer):
    id = serializers.UUIDField()
    source = serializers.ChoiceField(choices=GrantSource.choices)
    remaining = serializers.IntegerField()
    original_amount = serializers.IntegerField()
    expires_at = serializers.DateTimeField(allow_null=True)


class BudgetOutput(serializers.Serializer):
    monthly_credits = serializers.IntegerField(allow_null=True, help_text="Credits per calendar month (UTC).")
    hard_limit = serializers.BooleanField(help_text="Usage past the budget is refused (402 budget_exceeded).")
    spent_this_month = serializers.IntegerField(help_text="Credits spent on usage this month, less its reversals.")
    remaining = serializers.IntegerField(allow_null=True, help_text="monthly_credits - spent_this_month, at least 0.")
    thresholds_notified = serializers.ListField(
        child=serializers.IntegerField(), help_text="The thresholds (50, 80, 100 %) already notified this month."
    )


class BudgetInput(serializers.Serializer):
    monthly_credits = serializers.IntegerField(
        min_value=1, max_value=2_147_483_647, allow_null=True, help_text="Credits per calendar month; null: no budget."
    )
    hard_limit = serializers.BooleanField(default=False)


class CreditsOutput(serializers.Serializer):
    balance = serializers.IntegerField()
    grants = GrantOutput(many=True)
    budget = BudgetOutput(allow_null=True, help_text="The monthly budget; null when none is set.")


class PaidByOutput(serializers.Serializer):
    grant_id = serializers.UUIDField(source="source_id")
    source = serializers.CharField(source="source.source")
    amount = serializers.IntegerField()
    expires_at = serializers.DateTimeField(source="source.expires_at", allow_null=True)


class TokenBreakdownOutput(serializers.Serializer):
    """The canonical breakdown: disjoint counts, each priced once at its component's price."""

    input = serializers.IntegerField(help_text="Input read fresh: not cached, not written to the cache, not audio.")
    cache_read = serializers.IntegerField()
    cache_write_5m = serializers.IntegerField()
    cache_write_1h = serializers.IntegerField()
    audio_input = serializers.IntegerField()
    output = serializers.IntegerField(help_text="Text output: not reasoning, audio or image.")
    reasoning = serializers.IntegerField()
    audio_output = serializers.IntegerField()
    image_output = serializers.IntegerField()


class UsageOutput(serializers.ModelSerializer):
    provider = serializers.CharField(source="provider.name")
    breakdown = serializers.SerializerMethodField()
    paid_by = serializers.SerializerMethodField(help_text="The grants that paid for this request.")
    deduction_id = serializers.UUIDField(
        allow_null=True, help_text="The deduction that took the credits (none at zero cost)."
    )

    class Meta:
        model = TokenUsageLedger
        fields = [
            "id",
            "request_id",
            "created_at",
            "provider",
            "model_name",
            "request_type",
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "audio_input_tokens",
            "reasoning_tokens",
            "audio_output_tokens",
            "image_output_tokens",
            "breakdown",
            "usage_format",
            "service_tier",
            "fee_units",
            "credits_deducted",
            "balance_after",
            "status",
            "is_byok",
            "request_started_at",
            "request_completed_at",
            "deduction_id",
            "paid_by",
        ]

    @extend_schema_field(TokenBreakdownOutput)
    def get_breakdown(self, usage) -> dict:
        return selectors.usage_breakdown(usage).as_dict()

    def get_paid_by(self, usage) -> list[dict]:
        if usage.deduction is None:
            return []
        return PaidByOutput(usage.deduction.consumptions.all(), many=True).data


class UsageListQuery(serializers.Serializer):
    date_from = DateField(required=False)
    date_to = DateField(required=False)
    model = serializers.CharField(required=False, max_length=255)
    provider = serializers.CharField(required=False, max_length=100)


class UsageDailyQuery(serializers.Serializer):
    date_from = DateField(required=False)
    date_to = DateField(required=False)

    def validate(self, attrs):
        if "date_from" in attrs and "date_to" in attrs and attrs["date_from"] > attrs["date_to"]:
            raise serializers.ValidationError({"date_from": ["Must not be after date_to."]})
        return attrs


class UsageDayOutput(serializers.Serializer):
    day = serializers.DateField()
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    credits = serializers.IntegerField()


class StaffGrantInput(serializers.Serializer):
    user_id = serializers.IntegerField(min_value=1)
    amount = serializers.IntegerField(min_value=1, max_value=1_000_000_000)
    reason = serializers.CharField(max_length=1000)
    expires_at = DateTimeField(required=False, allow_null=True)
    source = serializers.ChoiceField(
        choices=[(value, value) for value in GRANTABLE_BY_STAFF], default=CreditSource.ADMIN_GRANT
    )


class StaffGrantOutput(serializers.Serializer):
    allocation_id = serializers.UUIDField()
    balance_after = serializers.IntegerField()


class ReverseInput(serializers.Serializer):
    reason = serializers.CharField(max_length=1000)
    expires_at = DateTimeField(required=False, allow_null=True)


class ReverseOutput(serializers.Serializer):
    reversal_id = serializers.UUIDField()
    grant_id = serializers.UUIDField()
    amount = serializers.IntegerField()
    balance_after = serializers.IntegerField()


class ProviderOutput(serializers.ModelSerializer):
    class Meta:
        model = Provider
        fields = ["id", "name", "display_name", "api_type", "vendor_family", "is_enabled", "created_at", "updated_at"]


class ProviderInput(serializers.ModelSerializer):
    class Meta:
        model = Provider
        fields = ["name", "display_name", "api_type", "vendor_family", "is_enabled"]


class ProviderChangeInput(serializers.ModelSerializer):
    class Meta:
        model = Provider
        fields = ["display_name", "api_type", "vendor_family", "is_enabled"]


class ModelPriceOutput(serializers.ModelSerializer):
    provider = serializers.CharField(source="provider.name")

    class Meta:
        model = ModelProviderPricing
        fields = [
            "id",
            "provider",
            "model_name",
            "vendor_model_id",
            *PER_1K_PRICE_FIELDS,
            "context_tiers",
            "service_tiers",
            "request_fees",
            "region",
            "effective_from",
            "effective_until",
            "previous_price_input",
            "previous_price_output",
            "price_change_percent_input",
            "price_change_percent_output",
            "is_active",
            "description",
            "created_at",
        ]


PRICE = {"max_digits": 24, "decimal_places": 16, "min_value": 0}
OPTIONAL_PRICE = {**PRICE, "required": False, "allow_null": True}


class ModelPriceInput(serializers.Serializer):
    provider = serializers.SlugRelatedField(slug_field="name", queryset=Provider.objects.all())
    model_name = serializers.CharField(max_length=255)
    vendor_model_id = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)
    input_price_per_1k = serializers.DecimalField(**PRICE)
    output_price_per_1k = serializers.DecimalField(**PRICE)
    cache_input_price_per_1k = serializers.DecimalField(**OPTIONAL_PRICE, help_text="Cache writes (5-minute TTL).")
    cache_hit_price_per_1k = serializers.DecimalField(**OPTIONAL_PRICE, help_text="Cache reads.")
    cache_write_1h_price_per_1k = serializers.DecimalField(**OPTIONAL_PRICE)
    reasoning_price_per_1k = serializers.DecimalField(**OPTIONAL_PRICE)
    audio_input_price_per_1k = serializers.DecimalField(**OPTIONAL_PRICE)
    audio_output_price_per_1k = serializers.DecimalField(**OPTIONAL_PRICE)
    image_output_price_per_1k = serializers.DecimalField(**OPTIONAL_PRICE)
    context_tiers = serializers.JSONField(
        required=False,
        help_text='[{"above_tokens": 200000, "prices": {"input": "0.0025"}}]: above that many input tokens the '
        "whole request takes these prices (USD per 1,000 tokens by component).",
    )
    service_tiers = serializers.JSONField(
        required=False, help_text='{"batch": {"prices": {...}, "context_tiers": [...]}}; also flex, priority.'
    )
    request_fees = serializers.JSONField(required=False, help_text='USD per unit: {"web_search": "0.01"}.')
    region = serializers.CharField(max_length=50, required=False, default="", allow_blank=True)
    effective_from = DateTimeField(required=False, help_text="Default: now.")
    description = serializers.CharField(required=False, default="", allow_blank=True)


class PricingConfigOutput(serializers.ModelSerializer):
    provider = serializers.CharField(source="provider.name", allow_null=True, default=None)

    class Meta:
        model = PricingConfig
        fields = [
            "id",
            "scope_type",
            "subscription_tier",
            "provider",
            "model_name",
            "margin_strategy",
            "margin_multiplier",
            "previous_multiplier",
            "change_percent",
            "effective_from",
            "effective_until",
            "reason",
            "reason_details",
            "approval_status",
            "created_by",
            "approved_by",
            "approved_at",
            "is_active",
            "created_at",
        ]


class PricingConfigInput(serializers.Serializer):
    scope_type = serializers.ChoiceField(choices=PricingScope.choices)
    # Absent for scopes other than a tier (the service's default); a default outside the choices would
    # be an invalid value in the OpenAPI document.
    subscription_tier = serializers.ChoiceField(
        choices=PricingConfig._meta.get_field("subscription_tier").choices, required=False
    )
    provider = serializers.SlugRelatedField(
        slug_field="name", queryset=Provider.objects.all(), required=False, allow_null=True, default=None
    )
    model_name = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)
    margin_multiplier = serializers.DecimalField(max_digits=6, decimal_places=4, min_value=0)
    effective_from = DateTimeField(required=False, allow_null=True)
    effective_until = DateTimeField(required=False, allow_null=True)
    reason = serializers.CharField(max_length=50)
    reason_details = serializers.CharField(required=False, default="", allow_blank=True)


class PricingRejectInput(serializers.Serializer):
    reason = serializers.CharField(max_length=1000)


class PricingSimulationOutput(serializers.Serializer):
    days = serializers.IntegerField()
    requests = serializers.IntegerField()
    affected_requests = serializers.IntegerField()
    vendor_cost_usd = serializers.DecimalField(max_digits=20, decimal_places=2)
    current_revenue_usd = serializers.DecimalField(max_digits=20, decimal_places=2)
    projected_revenue_usd = serializers.DecimalField(max_digits=20, decimal_places=2)
    expected_revenue_impact_usd = serializers.DecimalField(max_digits=20, decimal_places=2)
    current_margin_usd = serializers.DecimalField(max_digits=20, decimal_places=2)
    projected_margin_usd = serializers.DecimalField(max_digits=20, decimal_places=2)
    expected_margin_change_usd = serializers.DecimalField(max_digits=20, decimal_places=2)


class StaffDeductionOutput(serializers.ModelSerializer):
    """A deduction (or a reversal) with the LLM request it paid for, if any."""

    user_id = serializers.IntegerField()
    user_email = serializers.EmailField(source="user.email")
    reverses_id = serializers.UUIDField(allow_null=True, help_text="For a reversal: the deduction it gave back.")
    reversed_by_id = serializers.IntegerField(allow_null=True, help_text="For a reversal: the staff member.")
    request_type = serializers.CharField(source="usage.request_type", default=None, allow_null=True)
    provider = serializers.CharField(source="usage.provider.name", default=None, allow_null=True)
    model_name = serializers.CharField(source="usage.model_name", default=None, allow_null=True)

    class Meta:
        model = CreditDeductionLedger
        fields = [
            "id",
            "created_at",
            "user_id",
            "user_email",
            "amount",
            "balance_before",
            "balance_after",
            "reason",
            "status",
            "request_id",
            "request_type",
            "provider",
            "model_name",
            "reverses_id",
            "reversed_by_id",
            "reversal_reason",
        ]


class CreditPackOutput(serializers.ModelSerializer):
    """A pack on sale. `price` is in the currency's major unit, as a string ("10.00")."""

    credit_expiry_days = serializers.IntegerField(
        allow_null=True, help_text="The credits expire this many days after the purchase; null: never."
    )

    class Meta:
        model = CreditPack
        fields = ["id", "name", "credits", "price", "currency", "credit_expiry_days"]


class StaffCreditPackOutput(CreditPackOutput):
    class Meta:
        model = CreditPack
        fields = [*CreditPackOutput.Meta.fields, "is_active", "created_at", "updated_at"]


class CreditPackInput(serializers.Serializer):
    """A pack's definition. Once a purchase of it is paid, price, currency, credits and
    credit_expiry_days are fixed (409 `pack_sold`): retire it and create another."""

    name = serializers.CharField(max_length=100)
    credits = serializers.IntegerField(min_value=1, max_value=1_000_000_000)
    price = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=Decimal("0.01"), help_text="In the currency's major unit."
    )
    currency = serializers.RegexField(r"^[A-Za-z]{3}$", default="usd", help_text="ISO 4217 code.")
    credit_expiry_days = serializers.IntegerField(
        min_value=1, max_value=36_500, required=False, allow_null=True, help_text="Empty or null: never expire."
    )
    is_active = serializers.BooleanField(default=True)

    def validate_currency(self, value):
        return value.lower()


class PackPurchaseInput(serializers.Serializer):
    pack = serializers.UUIDField(help_text="The id of an active credit pack (`credits/packs/`).")


class PackSoldOutput(serializers.Serializer):
    id = serializers.UUIDField(allow_null=True)
    name = serializers.CharField()
    credits = serializers.IntegerField()
    credit_expiry_days = serializers.IntegerField(allow_null=True)


class PackPurchaseOutput(serializers.Serializer):
    """The purchase's payment: `succeeded` when the credits are already granted (the offline
    provider), otherwise the customer pays at `checkout_url` and the credits arrive with Stripe's
    confirmation."""

    operation_id = serializers.UUIDField(help_text="The payment operation of this purchase.")
    status = serializers.CharField(help_text="The payment operation's state: pending, submitted, succeeded, failed...")
    completed = serializers.BooleanField(help_text="Paid, and the credits granted.")
    checkout_url = serializers.URLField(allow_null=True, help_text="Where the customer pays; null when paid.")
    amount = serializers.CharField(help_text="What the purchase costs, in the currency's major unit.")
    currency = serializers.CharField()
    pack = PackSoldOutput(help_text="What the purchase sells, as it was when the purchase started.")
