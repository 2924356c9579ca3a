from django.core.cache import cache

from billing_project.enums import SubscriptionTier
from licensing.models import LicenseStatus, PerpetualLicense
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
    """The tier a user is on now: their live subscription's, else their entitlement's, else free."""
    subscription = subscription_live_for(user=user)
    if subscription is not None:
        return subscription.tier
    entitlement = UserEntitlement.objects.filter(user=user).values_list("tier", flat=True).first()
    return entitlement or SubscriptionTier.FREE


def tier_and_subscription_for(user_id: int) -> tuple[str, list]:
    """The statement the credits engine runs, with its other reads under the balance lock, for the
    tier a user's usage is priced at and their live subscription: one row, (tier or NULL for free;
    the live subscription's id or NULL).

    Which tier wins: a paid tier (the live subscription's, else the entitlement's) first; then
    `perpetual` for a holder of an active license without BYOK (BYOK usage costs nothing anyway);
    then the free tier. A paid plan is what the user pays for now, so it sets the margin even when
    they also hold a license. A user has at most one live subscription and one entitlement
    (constraints), so the join yields one row."""
    statuses = ", ".join(["%s"] * len(LIVE_STATUSES))
    entitlement = f"(SELECT e.tier FROM {UserEntitlement._meta.db_table} e WHERE e.user_id = %s)"
    licensed = (
        f"EXISTS (SELECT 1 FROM {PerpetualLicense._meta.db_table} l "
        "WHERE l.user_id = %s AND l.status = %s AND NOT l.byok_enabled)"
    )
    return (
        f"SELECT COALESCE(NULLIF(COALESCE(s.tier, {entitlement}), %s), "
        f"CASE WHEN {licensed} THEN %s END, COALESCE(s.tier, {entitlement})), "
        f"s.id FROM (SELECT 1) AS one LEFT JOIN {Subscription._meta.db_table} s "
        f"ON s.user_id = %s AND s.status IN ({statuses})",
        [
            user_id,
            SubscriptionTier.FREE,
            user_id,
            LicenseStatus.ACTIVE,
            SubscriptionTier.PERPETUAL,
            user_id,
            user_id,
            *LIVE_STATUSES,
        ],
    )


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
