"""One Stripe customer per user: created once, outside any transaction, and reused by every
checkout, charge and portal session."""

import stripe

from payments import stripe_api
from payments.models import StripeCustomer


def customer_id_of(*, user_id) -> str | None:
    return StripeCustomer.objects.filter(user_id=user_id).values_list("stripe_customer_id", flat=True).first()


def customer_ensure(*, user) -> str:
    """The user's Stripe customer id, creating the customer at Stripe the first time. The creation
    carries an idempotency key of the user, so two first checkouts at once get the same customer."""
    existing = customer_id_of(user_id=user.pk)
    if existing:
        return existing
    try:
        customer = stripe_api.client().v1.customers.create(
            params={"email": user.email, "metadata": {"user_id": str(user.pk)}},
            options=stripe_api.options(f"customer:{user.pk}"),
        )
    except stripe.StripeError as error:
        raise stripe_api.mapped_error(error, what="customer creation") from error
    customer_record(user=user, stripe_customer_id=customer.id)
    return customer_id_of(user_id=user.pk)


def customer_record(*, user, stripe_customer_id: str) -> None:
    """Remembers the user's Stripe customer (also one Stripe created for a checkout). The first one
    recorded stays: a user is one customer."""
    if stripe_customer_id:
        # get_or_create settles a concurrent first record: the loser reads the winner's row.
        StripeCustomer.objects.get_or_create(user=user, defaults={"stripe_customer_id": stripe_customer_id})
