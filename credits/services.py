"""Writes to credit balances. Every change locks the user's UserCreditBalance row and writes its
ledger rows in the same transaction."""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing_project.errors import RuleViolation
from credits import catalog
from credits.models import (
    ApprovalStatus,
    CreditAllocation,
    CreditSource,
    MarginAuditLog,
    MarginChange,
    ModelProviderPricing,
    PricingConfig,
    PricingScope,
    Provider,
    UserCreditBalance,
    UserCreditSource,
)


@dataclass(frozen=True)
class GrantResult:
    allocation: CreditAllocation
    balance_after: int
    created: bool


def balance_lock(*, user_id) -> UserCreditBalance:
    """The user's balance row, locked until the transaction ends (created on first use)."""
    UserCreditBalance.objects.get_or_create(user_id=user_id)
    return UserCreditBalance.objects.select_for_update().get(user_id=user_id)


@transaction.atomic
def credit_grant(
    *,
    user,
    amount: int,
    source: CreditSource,
    subscription=None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    expires_at: datetime | None = None,
    reason: str = "",
    granted_by=None,
) -> GrantResult:
    """Adds credits: the allocation, its grant and the balance, together.

    Idempotent per (subscription, period_start, source): a period is never allocated twice.
    """
    if amount <= 0:
        raise RuleViolation("A grant must be a positive number of credits.", code="invalid_amount")
    balance = balance_lock(user_id=user.pk)
    if subscription is not None:
        # Checked under the balance lock; the unique constraint backs it up.
        existing = CreditAllocation.objects.filter(
            subscription=subscription, period_start=period_start, source=source
        ).first()
        if existing is not None:
            return GrantResult(allocation=existing, balance_after=balance.amount, created=False)
    now = timezone.now()
    try:
        with transaction.atomic():
            allocation = CreditAllocation.objects.create(
                user=user,
                subscription=subscription,
                amount=amount,
                source=source,
                period_start=period_start,
                period_end=period_end,
                expires_at=expires_at,
                applied_to_balance_at=now,
                reason=reason,
                granted_by=granted_by,
            )
    except IntegrityError:
        existing = CreditAllocation.objects.get(subscription=subscription, period_start=period_start, source=source)
        return GrantResult(allocation=existing, balance_after=balance.amount, created=False)
    UserCreditSource.objects.create(
        user=user,
        source=source,
        original_amount=amount,
        remaining=amount,
        expires_at=expires_at,
        allocation=allocation,
    )
    balance.amount += amount
    balance.save(update_fields=["amount", "updated_at"])
    return GrantResult(allocation=allocation, balance_after=balance.amount, created=True)


SEED_EFFECTIVE_FROM = datetime(2024, 1, 1, tzinfo=UTC)


@transaction.atomic
def pricing_catalog_seed() -> dict[str, int]:
    """Loads the providers, vendor prices and approved tier margins of credits.catalog.

    Idempotent: rows that exist are left as they are (staff may have edited them).
    """
    created = {"providers": 0, "model_prices": 0, "tier_margins": 0}
    providers = {}
    for spec in catalog.PROVIDERS:
        provider, was_created = Provider.objects.get_or_create(
            name=spec["name"], defaults={"display_name": spec["display_name"], "api_type": spec["api_type"]}
        )
        providers[provider.name] = provider
        created["providers"] += was_created
    for spec in catalog.MODEL_PRICES:
        _, was_created = ModelProviderPricing.objects.get_or_create(
            provider=providers[spec["provider"]],
            model_name=spec["model_name"],
            effective_from=SEED_EFFECTIVE_FROM,
            defaults={
                "input_price_per_1k": Decimal(spec["input"]),
                "output_price_per_1k": Decimal(spec["output"]),
                "cache_input_price_per_1k": Decimal(spec["cache_input"]) if "cache_input" in spec else None,
                "cache_hit_price_per_1k": Decimal(spec["cache_hit"]) if "cache_hit" in spec else None,
                "description": "Catalog seed",
            },
        )
        created["model_prices"] += was_created
    for tier, multiplier in catalog.TIER_MARGINS.items():
        if PricingConfig.objects.filter(scope_type=PricingScope.TIER, subscription_tier=tier).exists():
            continue
        config = PricingConfig.objects.create(
            scope_type=PricingScope.TIER,
            subscription_tier=tier,
            margin_multiplier=multiplier,
            effective_from=SEED_EFFECTIVE_FROM,
            reason="catalog_seed",
            approval_status=ApprovalStatus.APPROVED,
            approved_at=timezone.now(),
            requires_approval=False,
        )
        MarginAuditLog.objects.create(
            pricing_config=config,
            change_type=MarginChange.CREATED,
            new_multiplier=multiplier,
            reason="Catalog seed",
            scope={"scope_type": PricingScope.TIER, "subscription_tier": tier},
        )
        created["tier_margins"] += 1
    return created
