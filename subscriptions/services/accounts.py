"""Accounts on the free tier and the tier catalog."""

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from subscriptions import catalog
from subscriptions.models import TierConfig
from subscriptions.services.lifecycle import subscription_start_free


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
