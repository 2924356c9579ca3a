"""Accounts on the free tier and the tier catalog."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from billing_project.email_verification import email_verification_send
from billing_project.enums import SubscriptionTier
from subscriptions import catalog
from subscriptions.codes import ErrorCode
from subscriptions.models import Subscription, TierConfig
from subscriptions.services.entitlements import entitlement_activate
from subscriptions.services.lifecycle import subscription_start_free


def _email_taken_error() -> ValidationError:
    return ValidationError({"email": ["An account with this e-mail already exists."]}, code=ErrorCode.EMAIL_TAKEN)


@transaction.atomic
def account_register(*, email: str, password: str, verification_link: str = ""):
    """Creates a user (username = e-mail, lower-cased) on the free tier with its free credits, and
    e-mails them the link to verify their address (`verification_link`, `{token}` in it) if given.

    With FREE_OFFERS_REQUIRE_VERIFIED_EMAIL the user is on the free tier (its entitlements) at once,
    and its subscription and credits start when the address is verified (account_email_verified).
    """
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
    if settings.FREE_OFFERS_REQUIRE_VERIFIED_EMAIL:
        entitlement_activate(user=user, tier=SubscriptionTier.FREE)
    else:
        subscription_start_free(user=user)
    if verification_link:
        email_verification_send(user=user, link_template=verification_link)
    return user


def account_email_verified(sender, *, user, **kwargs):
    """`email_verified`: a sign-up whose free credits waited for a verified address starts its free
    subscription now. A user who ever had a subscription had nothing held back. Runs in the
    verification's transaction, under its lock of the user row."""
    if not Subscription.objects.filter(user=user).exists():
        subscription_start_free(user=user)


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
