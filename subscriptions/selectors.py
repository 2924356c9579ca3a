from django.core.cache import cache

from audit.models import AdminAuditLog, AuditAction
from audit.services import resource_type_of
from billing_project.enums import SubscriptionTier
from payments.services.customers import customer_id_of
from subscriptions.models import LIVE_STATUSES, BillingInvoice, Subscription, TierConfig, UserEntitlement

# A safety net only: every change deletes the entry on commit.
ENTITLEMENTS_CACHE_SECONDS = 3600


def tier_list_active():
    return TierConfig.objects.filter(is_active=True).order_by("sort_order")


def subscription_live_for(*, user) -> Subscription | None:
    return Subscription.objects.filter(user=user, status__in=LIVE_STATUSES).first()


def customer_to_charge(*, user_id, subscription: Subscription | None) -> str:
    """The Stripe customer a charge goes to: the user's one customer, else the one their
    subscription recorded ("" when there is none, so nothing can be charged)."""
    return customer_id_of(user_id=user_id) or (subscription.stripe_customer_id if subscription else "") or ""


def user_tier(*, user) -> str:
    """The tier a user is on now: their entitlement's, else free. The services keep the entitlement in
    step with the subscription (a suspended or ended one leaves the free tier) and push this tier to
    credits, which prices usage at it (subscriptions.services.entitlements.credits_tier_push)."""
    return UserEntitlement.objects.filter(user=user).values_list("tier", flat=True).first() or SubscriptionTier.FREE


def live_subscription_id_for(*, user):
    return Subscription.objects.filter(user=user, status__in=LIVE_STATUSES).values_list("pk", flat=True).first()


def _entitlements_version_key(user_id) -> str:
    return f"subscriptions:entitlements-version:{user_id}"


def entitlements_cache_key(user_id) -> str:
    """Where the user's entitlements are cached now. Each change moves the user to a new version
    once it commits, so a read that loaded the row before that commit can only fill a key nobody
    reads any more: a stale copy is never served."""
    return f"subscriptions:entitlements:{user_id}:{cache.get(_entitlements_version_key(user_id), 0)}"


def entitlements_cache_invalidate(user_id) -> None:
    version_key = _entitlements_version_key(user_id)
    try:
        cache.incr(version_key)
    except ValueError:  # no version yet (or evicted): any version but 0 is new
        cache.add(version_key, 1, timeout=None)


def entitlements_for(*, user) -> dict:
    """The user's entitlements as `me/entitlements/` shows them, from the cache when it has them.
    Every change invalidates the entry when it commits (subscriptions.services.entitlements)."""
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


def last_transition_reason(*, subscription: Subscription) -> str:
    """The reason recorded with the subscription's latest status change ("" when none was)."""
    latest = (
        AdminAuditLog.objects.filter(
            resource_type=resource_type_of(subscription),
            resource_id=str(subscription.pk),
            action=AuditAction.TRANSITION,
        )
        .order_by("-timestamp", "-id")
        .values_list("new_value", flat=True)
        .first()
    )
    return (latest or {}).get("reason", "")
