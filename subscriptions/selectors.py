from django.core.cache import cache

from billing_project.enums import SubscriptionTier
from subscriptions.models import LIVE_STATUSES, BillingInvoice, Subscription, TierConfig, UserEntitlement

# A safety net only: every change deletes the entry on commit.
ENTITLEMENTS_CACHE_SECONDS = 3600


def tier_list_active():
    return TierConfig.objects.filter(is_active=True).order_by("sort_order")


def subscription_live_for(*, user) -> Subscription | None:
    return Subscription.objects.filter(user=user, status__in=LIVE_STATUSES).first()


def user_tier(*, user) -> str:
    """The tier a user is on now: their live subscription's, else their entitlement's, else free."""
    subscription = subscription_live_for(user=user)
    if subscription is not None:
        return subscription.tier
    entitlement = UserEntitlement.objects.filter(user=user).values_list("tier", flat=True).first()
    return entitlement or SubscriptionTier.FREE


def tier_and_subscription_for(user_id: int) -> tuple[str, object]:
    """(tier, live subscription id or None) for the credits engine, in one query when subscribed."""
    live = Subscription.objects.filter(user_id=user_id, status__in=LIVE_STATUSES).values_list("tier", "pk").first()
    if live is not None:
        return live
    entitlement = UserEntitlement.objects.filter(user_id=user_id).values_list("tier", flat=True).first()
    return entitlement or SubscriptionTier.FREE, None


def entitlements_cache_key(user_id) -> str:
    return f"subscriptions:entitlements:{user_id}"


def entitlements_for(*, user) -> dict:
    """The user's entitlements as `me/entitlements/` shows them, from the cache when it has them.
    Every change deletes the entry when it commits (subscriptions.services.entitlements)."""
    key = entitlements_cache_key(user.pk)
    cached = cache.get(key)
    if cached is not None:
        return cached
    entitlement = UserEntitlement.objects.filter(user=user).first()
    if entitlement is None:
        body = {"tier": SubscriptionTier.FREE, "entitlements": {}, "activated_at": None, "expires_at": None}
    else:
        body = {
            "tier": entitlement.tier,
            "entitlements": entitlement.entitlements,
            "activated_at": entitlement.activated_at,
            "expires_at": entitlement.expires_at,
        }
    cache.set(key, body, timeout=ENTITLEMENTS_CACHE_SECONDS)
    return body


def invoices_for(*, user):
    return BillingInvoice.objects.filter(user=user).order_by("-period_end", "-created_at")


def subscriptions_for_staff():
    return Subscription.objects.select_related("user").order_by("-created_at")
