"""What a user may use: their tier's entitlements, kept in UserEntitlement and cached for reads."""

from django.db import transaction
from django.utils import timezone

from billing_project.errors import RuleViolation
from subscriptions.codes import ErrorCode
from subscriptions.models import TierConfig, UserEntitlement
from subscriptions.selectors import entitlements_cache_invalidate


def tier_config_get(tier: str) -> TierConfig:
    config = TierConfig.objects.filter(tier=tier, is_active=True).first()
    if config is None:
        raise RuleViolation(f"The tier '{tier}' is not in the catalog.", code=ErrorCode.TIER_NOT_AVAILABLE)
    return config


@transaction.atomic
def entitlement_activate(*, user, tier: str, expires_at=None) -> UserEntitlement:
    """Sets what the user may use to what `tier` grants. The cached copy is invalidated when the
    change commits, so the next read in any process sees it."""
    config = tier_config_get(tier)
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
