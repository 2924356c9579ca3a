"""What a user may use: their tier's entitlements, kept in UserEntitlement and cached for reads."""

from django.db import transaction
from django.utils import timezone

from billing_project.errors import RuleViolation
from credits.services import account_tier_set
from subscriptions.codes import ErrorCode
from subscriptions.models import TierConfig, UserEntitlement
from subscriptions.selectors import entitlements_cache_invalidate, live_subscription_id_for, user_tier


def tier_config_get(tier: str) -> TierConfig:
    config = TierConfig.objects.filter(tier=tier, is_active=True).first()
    if config is None:
        raise RuleViolation(f"The tier '{tier}' is not in the catalog.", code=ErrorCode.TIER_NOT_AVAILABLE)
    return config


@transaction.atomic
def entitlement_activate(*, user, tier: str, expires_at=None) -> UserEntitlement:
    """Sets what the user may use to what `tier` grants, and tells credits. The cached copy is
    invalidated when the change commits, so the next read in any process sees it."""
    config = tier_config_get(tier)
    # The balance row first, then the entitlement: the order every subscription change takes them in
    # (a period's credits are granted before its entitlements are set).
    credits_tier_push(user=user, tier=tier)
    entitlement, _ = UserEntitlement.objects.update_or_create(
        user=user,
        defaults={
            "tier": tier,
            "entitlements": config.entitlements,
            "activated_at": timezone.now(),
            "expires_at": expires_at,
        },
    )
    transaction.on_commit(lambda: entitlements_cache_invalidate(user.pk))
    return entitlement


def credits_tier_push(*, user, tier: str | None = None) -> None:
    """Tells credits, in the caller's transaction, the user's tier (`tier`, else as stored now) and
    their live subscription: usage is priced at them without any lookup into subscriptions. Called
    wherever either changes: every entitlement change, a subscription that ends without a
    replacement, and console edits."""
    account_tier_set(
        user_id=user.pk, tier=tier or user_tier(user=user), subscription_id=live_subscription_id_for(user=user)
    )
