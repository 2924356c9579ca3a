"""Writes to credits. Every change of a balance goes through the user's locked account, which writes
it with its ledger rows in the caller's transaction (see `accounts.LockedAccount`)."""

from credits.services.accounts import account_tier_set
from credits.services.budgets import budget_set, budget_set_by_staff
from credits.services.grants import (
    ExpiryResult,
    GrantResult,
    ReversalResult,
    allocations_claw_back,
    credit_grant,
    credit_grant_by_staff,
    credits_expire,
    credits_expire_for_user,
    deduction_reverse,
    grants_spent_close,
    grants_spent_unclosed,
    users_with_overdue_grants,
)
from credits.services.pricing_changes import (
    ImportSummary,
    model_price_create,
    model_prices_import,
    pricing_catalog_seed,
    pricing_config_approve,
    pricing_config_create,
    pricing_config_reject,
    provider_create,
    provider_update,
)
from credits.services.usage import (
    UsageEvent,
    UsageResult,
    hold_release,
    hold_reserve,
    holds_expire,
    usage_record,
    usage_record_batch,
)

__all__ = [
    "ExpiryResult",
    "GrantResult",
    "ImportSummary",
    "ReversalResult",
    "UsageEvent",
    "UsageResult",
    "account_tier_set",
    "allocations_claw_back",
    "budget_set",
    "budget_set_by_staff",
    "credit_grant",
    "credit_grant_by_staff",
    "credits_expire",
    "credits_expire_for_user",
    "deduction_reverse",
    "hold_release",
    "hold_reserve",
    "holds_expire",
    "model_price_create",
    "model_prices_import",
    "pricing_catalog_seed",
    "pricing_config_approve",
    "pricing_config_create",
    "pricing_config_reject",
    "provider_create",
    "provider_update",
    "usage_record",
    "usage_record_batch",
    "grants_spent_close",
    "grants_spent_unclosed",
    "users_with_overdue_grants",
]
