import uuid
from datetime import timedelta
from decimal import Decimal

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from billing_project.enums import SubscriptionTier
from billing_project.tests.factories import UserFactory
from credits.models import (
    ApprovalStatus,
    AutoRecharge,
    CreditAllocation,
    CreditConsumption,
    CreditDeductionLedger,
    CreditHold,
    CreditPack,
    CreditSource,
    CreditUsageDailySummary,
    DeductionReason,
    GrantSource,
    HoldStatus,
    MarginAuditLog,
    MarginChange,
    ModelProviderPricing,
    PricingConfig,
    PricingScope,
    Provider,
    RequestType,
    TokenUsageDailySummary,
    TokenUsageLedger,
    UserCreditBalance,
    UserCreditSource,
    VendorName,
)


class ProviderFactory(DjangoModelFactory):
    class Meta:
        model = Provider

    name = factory.Sequence(lambda n: f"provider-{n}")
    display_name = factory.LazyAttribute(lambda o: o.name.title())
    api_type = VendorName.OPENAI


class ModelProviderPricingFactory(DjangoModelFactory):
    class Meta:
        model = ModelProviderPricing

    provider = factory.SubFactory(ProviderFactory)
    model_name = "gpt-4o"
    input_price_per_1k = Decimal("0.005")
    output_price_per_1k = Decimal("0.015")
    effective_from = factory.LazyFunction(lambda: timezone.now() - timedelta(days=1))


class PricingConfigFactory(DjangoModelFactory):
    """A tier-scoped multiplier awaiting approval. The traits give the other scopes, whose fields the
    database checks (`pricing_scope_fields_match`), and an approval by someone other than the creator."""

    class Meta:
        model = PricingConfig

    class Params:
        provider_scope = factory.Trait(
            scope_type=PricingScope.PROVIDER, subscription_tier="", provider=factory.SubFactory(ProviderFactory)
        )
        model_scope = factory.Trait(scope_type=PricingScope.MODEL, subscription_tier="", model_name="gpt-4o")
        combination_scope = factory.Trait(
            scope_type=PricingScope.COMBINATION, provider=factory.SubFactory(ProviderFactory), model_name="gpt-4o"
        )
        approved = factory.Trait(
            approval_status=ApprovalStatus.APPROVED,
            approved_by=factory.SubFactory(UserFactory, is_staff=True),
            approved_at=factory.LazyFunction(timezone.now),
        )

    scope_type = PricingScope.TIER
    subscription_tier = SubscriptionTier.PRO
    margin_multiplier = Decimal("1.5000")
    effective_from = factory.LazyFunction(lambda: timezone.now() - timedelta(days=1))
    reason = "initial"
    created_by = factory.SubFactory(UserFactory, is_staff=True)


class MarginAuditLogFactory(DjangoModelFactory):
    class Meta:
        model = MarginAuditLog

    pricing_config = factory.SubFactory(PricingConfigFactory)
    change_type = MarginChange.CREATED
    changed_by = factory.SelfAttribute("pricing_config.created_by")
    new_multiplier = factory.SelfAttribute("pricing_config.margin_multiplier")
    reason = "initial"


class CreditAllocationFactory(DjangoModelFactory):
    class Meta:
        model = CreditAllocation

    user = factory.SubFactory(UserFactory)
    amount = 1_000
    source = CreditSource.ADMIN_GRANT
    applied_to_balance_at = factory.LazyFunction(timezone.now)
    reason = "test grant"


class UserCreditBalanceFactory(DjangoModelFactory):
    """Zero by default, which matches a user without grants."""

    class Meta:
        model = UserCreditBalance

    user = factory.SubFactory(UserFactory)
    amount = 0


class UserCreditSourceFactory(DjangoModelFactory):
    """A grant from an allocation. For a restored grant pass `allocation=None` and `reversal_of`."""

    class Meta:
        model = UserCreditSource

    user = factory.SubFactory(UserFactory)
    source = GrantSource.ADMIN_GRANT
    original_amount = 1_000
    remaining = factory.SelfAttribute("original_amount")
    allocation = factory.SubFactory(
        CreditAllocationFactory,
        user=factory.SelfAttribute("..user"),
        amount=factory.SelfAttribute("..original_amount"),
        source=factory.SelfAttribute("..source"),
    )


class CreditDeductionLedgerFactory(DjangoModelFactory):
    """A deduction whose balance arithmetic holds; the `reversal` trait restores one."""

    class Meta:
        model = CreditDeductionLedger

    class Params:
        reversal = factory.Trait(
            reason=DeductionReason.REVERSAL,
            request_id=None,
            reverses=factory.SubFactory(
                "credits.tests.factories.CreditDeductionLedgerFactory",
                user=factory.SelfAttribute("..user"),
                amount=factory.SelfAttribute("..amount"),
            ),
            reversal_reason="refund",
        )

    user = factory.SubFactory(UserFactory)
    amount = 100
    balance_before = 1_000
    balance_after = factory.LazyAttribute(
        lambda o: o.balance_before + o.amount if o.reason == DeductionReason.REVERSAL else o.balance_before - o.amount
    )
    request_id = factory.LazyFunction(uuid.uuid4)
    reason = DeductionReason.INFERENCE


class CreditConsumptionFactory(DjangoModelFactory):
    class Meta:
        model = CreditConsumption

    deduction = factory.SubFactory(CreditDeductionLedgerFactory)
    source = factory.SubFactory(UserCreditSourceFactory, user=factory.SelfAttribute("..deduction.user"))
    amount = factory.SelfAttribute("deduction.amount")


class CreditHoldFactory(DjangoModelFactory):
    class Meta:
        model = CreditHold

    user = factory.SubFactory(UserFactory)
    hold_id = factory.LazyFunction(uuid.uuid4)
    amount = 500
    status = HoldStatus.HELD
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=15))


class TokenUsageLedgerFactory(DjangoModelFactory):
    """1,000 input and 500 output tokens of gpt-4o at margin 1.5, with the deduction that paid for it."""

    class Meta:
        model = TokenUsageLedger

    request_id = factory.LazyFunction(uuid.uuid4)
    user = factory.SubFactory(UserFactory)
    provider = factory.SubFactory(ProviderFactory)
    model_name = "gpt-4o"
    pricing = factory.SubFactory(
        ModelProviderPricingFactory,
        provider=factory.SelfAttribute("..provider"),
        model_name=factory.SelfAttribute("..model_name"),
    )
    input_tokens = 1_000
    output_tokens = 500
    total_tokens = factory.LazyAttribute(lambda o: o.input_tokens + o.output_tokens)
    vendor_cost = Decimal("0.0125")
    margin_multiplier = Decimal("1.5000")
    credit_value_usd = Decimal("0.01875")
    credits_deducted = 19
    gross_margin_usd = Decimal("0.00625")
    request_type = RequestType.CHAT
    request_started_at = factory.LazyFunction(lambda: timezone.now() - timedelta(seconds=2))
    request_completed_at = factory.LazyFunction(timezone.now)
    processing_time_ms = 2_000
    user_tier_at_request = SubscriptionTier.PRO
    deduction = factory.SubFactory(
        CreditDeductionLedgerFactory,
        user=factory.SelfAttribute("..user"),
        amount=factory.SelfAttribute("..credits_deducted"),
        request_id=factory.SelfAttribute("..request_id"),
        token_vendor_cost=factory.SelfAttribute("..vendor_cost"),
        margin_multiplier=factory.SelfAttribute("..margin_multiplier"),
        gross_margin=factory.SelfAttribute("..gross_margin_usd"),
    )


class TokenUsageDailySummaryFactory(DjangoModelFactory):
    class Meta:
        model = TokenUsageDailySummary

    user = factory.SubFactory(UserFactory)
    summary_date = factory.LazyFunction(timezone.localdate)
    total_requests = 10
    total_input_tokens = 10_000
    total_output_tokens = 5_000
    total_vendor_cost = Decimal("0.125")
    total_credits_deducted = 190
    total_gross_margin = Decimal("0.0625")
    avg_request_latency_ms = 2_000
    success_rate = Decimal("100.00")


class CreditUsageDailySummaryFactory(DjangoModelFactory):
    class Meta:
        model = CreditUsageDailySummary

    user = factory.SubFactory(UserFactory)
    summary_date = factory.LazyFunction(timezone.localdate)
    total_deductions = 190
    total_requests = 10
    total_vendor_cost = Decimal("0.125")
    total_gross_margin = Decimal("0.0625")
    total_credits_granted = 1_000


class CreditPackFactory(DjangoModelFactory):
    class Meta:
        model = CreditPack

    name = factory.Sequence(lambda n: f"Pack {n}")
    credits = 5_000
    price = Decimal("10.00")
    currency = "usd"


class AutoRechargeFactory(DjangoModelFactory):
    class Meta:
        model = AutoRecharge

    user = factory.SubFactory(UserFactory)
    enabled = True
    threshold = 1_000
    pack = factory.SubFactory(CreditPackFactory)
    monthly_cap = Decimal("50.00")
