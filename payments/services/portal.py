"""The customer portal: Stripe's hosted page where a customer updates their card, sees their
invoices and cancels. A session is made for the user's one customer, with no transaction open."""

from dataclasses import dataclass

import stripe
from django.conf import settings

from payments import stripe_api
from payments.services.customers import customer_ensure
from payments.services.operations import stripe_active


@dataclass(frozen=True)
class PortalSession:
    """Where to send the customer; `url` is None with the offline provider, which has no portal."""

    url: str | None
    provider: str


def billing_portal_session_create(*, user) -> PortalSession:
    """A portal session for the user's Stripe customer (created at Stripe the first time). Each call
    makes a new short-lived session: nothing of ours is written but the customer. Raises
    ProviderUnavailable (503) or ProviderError (502) when Stripe does not make it."""
    if not stripe_active():
        return PortalSession(url=None, provider="offline")
    customer_id = customer_ensure(user=user)
    params = {"customer": customer_id}
    if settings.BILLING_PORTAL_RETURN_URL:
        params["return_url"] = settings.BILLING_PORTAL_RETURN_URL
    try:
        session = stripe_api.client().v1.billing_portal.sessions.create(params=params)
    except stripe.StripeError as error:
        raise stripe_api.mapped_error(error, what="billing portal session") from error
    return PortalSession(url=session.url, provider="stripe")
