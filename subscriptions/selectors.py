from billing_project.enums import SubscriptionTier
from subscriptions.models import LIVE_STATUSES, Subscription, TierConfig, UserEntitlement


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
