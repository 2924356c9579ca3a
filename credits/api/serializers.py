from rest_framework import serializers

from billing_project.fields import DateField, DateTimeField
from credits.models import (
    CreditSource,
    GrantSource,
    ModelProviderPricing,
    PricingConfig,
    PricingScope,
    Provider,
    RequestType,
    TokenUsageLedger,
)
from credits.services.grants import GRANTABLE_BY_STAFF

TOKENS = {"min_value": 0, "max_value": 2_000_000_000}


class UsageEventInput(serializers.Serializer):
    """The documented shape of a usage event; requests are parsed by credits.api.events, which
    applies these rules faster (a test keeps the two in step)."""

    request_id = serializers.UUIDField()
    user_id = serializers.IntegerField(min_value=1)
    provider = serializers.CharField(max_length=100)
    model = serializers.CharField(max_length=255)
    input_tokens = serializers.IntegerField(**TOKENS)
    output_tokens = serializers.IntegerField(**TOKENS)
    cached_input_tokens = serializers.IntegerField(**TOKENS, default=0, help_text="Tokens read from the cache.")
    cache_write_tokens = serializers.IntegerField(**TOKENS, default=0, help_text="Tokens written to the cache.")
    request_type = serializers.ChoiceField(choices=RequestType.choices)
    request_started_at = DateTimeField()
    request_completed_at = DateTimeField()
    hold_id = serializers.UUIDField(required=False, allow_null=True, help_text="Captures this reservation.")
    streaming_segments = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    region = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")


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


class UsageBatchInput(serializers.Serializer):
    """The documented shape of a batch; the view checks the envelope and parses each event itself."""

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
    balance = serializers.IntegerField()
    available = serializers.IntegerField(help_text="Balance minus live holds.")


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


class CreditsOutput(serializers.Serializer):
    balance = serializers.IntegerField()
    grants = GrantOutput(many=True)


class PaidByOutput(serializers.Serializer):
    grant_id = serializers.UUIDField(source="source_id")
    source = serializers.CharField(source="source.source")
    amount = serializers.IntegerField()
    expires_at = serializers.DateTimeField(source="source.expires_at", allow_null=True)


class UsageOutput(serializers.ModelSerializer):
    provider = serializers.CharField(source="provider.name")
    paid_by = serializers.SerializerMethodField(help_text="The grants that paid for this request.")

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
            "credits_deducted",
            "balance_after",
            "status",
            "is_byok",
            "request_started_at",
            "request_completed_at",
            "paid_by",
        ]

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
        fields = ["id", "name", "display_name", "api_type", "is_enabled", "created_at", "updated_at"]


class ProviderInput(serializers.ModelSerializer):
    class Meta:
        model = Provider
        fields = ["name", "display_name", "api_type", "is_enabled"]


class ProviderChangeInput(serializers.ModelSerializer):
    class Meta:
        model = Provider
        fields = ["display_name", "api_type", "is_enabled"]


class ModelPriceOutput(serializers.ModelSerializer):
    provider = serializers.CharField(source="provider.name")

    class Meta:
        model = ModelProviderPricing
        fields = [
            "id",
            "provider",
            "model_name",
            "vendor_model_id",
            "input_price_per_1k",
            "output_price_per_1k",
            "cache_input_price_per_1k",
            "cache_hit_price_per_1k",
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


PRICE = {"max_digits": 16, "decimal_places": 10, "min_value": 0}


class ModelPriceInput(serializers.Serializer):
    provider = serializers.SlugRelatedField(slug_field="name", queryset=Provider.objects.all())
    model_name = serializers.CharField(max_length=255)
    vendor_model_id = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)
    input_price_per_1k = serializers.DecimalField(**PRICE)
    output_price_per_1k = serializers.DecimalField(**PRICE)
    cache_input_price_per_1k = serializers.DecimalField(**PRICE, required=False, allow_null=True)
    cache_hit_price_per_1k = serializers.DecimalField(**PRICE, required=False, allow_null=True)
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
    subscription_tier = serializers.ChoiceField(
        choices=PricingConfig._meta.get_field("subscription_tier").choices, required=False, default=""
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
