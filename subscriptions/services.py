"""Subscription lifecycle writes: accounts on the free tier, entitlements, the tier catalog."""

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing_project.enums import BillingCycle, SubscriptionTier
from billing_project.errors import RuleViolation
from credits.models import CreditSource
from credits.services import credit_grant
from subscriptions import catalog
from subscriptions.models import Subscription, SubscriptionStatus, TierConfig, UserEntitlement
from subscriptions.periods import period_end


def _tier_config(tier: str) -> TierConfig:
    config = TierConfig.objects.filter(tier=tier, is_active=True).first()
    if config is None:
        raise RuleViolation(f"The tier '{tier}' is not in the catalog.", code="tier_not_available")
    return config


@transaction.atomic
def entitlement_activate(*, user, tier: str, expires_at=None) -> UserEntitlement:
    """Sets what the user may use to what their tier grants."""
    config = _tier_config(tier)
    entitlement, _ = UserEntitlement.objects.update_or_create(
        user=user,
        defaults={
            "tier": tier,
            "entitlements": config.entitlements,
            "activated_at": timezone.now(),
            "expires_at": expires_at,
        },
    )
    return entitlement


@transaction.atomic
def subscription_start_free(*, user) -> Subscription:
    """Puts a user on the free tier and allocates its credits for the first period."""
    config = _tier_config(SubscriptionTier.FREE)
    now = timezone.now()
    subscription = Subscription.objects.create(
        user=user,
        tier=SubscriptionTier.FREE,
        billing_cycle=BillingCycle.MONTHLY,
        status=SubscriptionStatus.ACTIVE,
        base_price_usd=config.monthly_price_usd,
        monthly_credit_allocation=config.monthly_credit_allocation,
        current_period_start=now,
        current_period_end=period_end(now, BillingCycle.MONTHLY),
    )
    if config.monthly_credit_allocation:
        credit_grant(
            user=user,
            amount=config.monthly_credit_allocation,
            source=CreditSource.SUBSCRIPTION,
            subscription=subscription,
            period_start=subscription.current_period_start,
            period_end=subscription.current_period_end,
            expires_at=subscription.current_period_end,
            reason="Free tier monthly credits",
        )
    entitlement_activate(user=user, tier=SubscriptionTier.FREE)
    return subscription


def _email_taken_error() -> ValidationError:
    return ValidationError({"email": ["An account with this e-mail already exists."]}, code="email_taken")


@transaction.atomic
def account_register(*, email: str, password: str):
    """Creates a user (username = e-mail, lower-cased) on the free tier with its free credits."""
    user_model = get_user_model()
    email = user_model.objects.normalize_email(email).strip().lower()
    if user_model.objects.filter(email__iexact=email).exists() or user_model.objects.filter(username=email).exists():
        raise _email_taken_error()
    candidate = user_model(username=email, email=email)
    try:
        validate_password(password, user=candidate)
    except ValidationError as error:
        raise ValidationError({"password": error.messages}) from error
    try:
        with transaction.atomic():
            user = user_model.objects.create_user(username=email, email=email, password=password)
    except IntegrityError as error:  # a concurrent registration of the same e-mail won the race
        raise _email_taken_error() from error
    subscription_start_free(user=user)
    return user


@transaction.atomic
def tier_catalog_seed() -> int:
    """Loads the six tiers of subscriptions.catalog; existing tiers (maybe edited by staff) stay."""
    created = 0
    for sort_order, spec in enumerate(catalog.TIERS):
        defaults = {key: value for key, value in spec.items() if key != "tier"}
        _, was_created = TierConfig.objects.get_or_create(
            tier=spec["tier"], defaults={**defaults, "sort_order": sort_order}
        )
        created += was_created
    return created
