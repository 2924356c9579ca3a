"""The payment provider: one way to start a checkout, and one way to finish it.

With `STRIPE_SECRET_KEY` set, `checkout_start` creates a Stripe Checkout Session (mode payment) and the
purchase completes later, when the `checkout.session.completed` webhook calls `checkout_completed`.
Without it, the offline provider (development, tests) records the payment and calls
`checkout_completed` at once, inside the caller's transaction.

`checkout_completed` dispatches on the checkout's `kind` to a handler the owning app registers
(licensing registers "license" and "license_upgrade" in its AppConfig.ready()): this module sits
below the apps and imports none of them but audit.
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import stripe
from django.conf import settings

from audit.models import AuditAction
from audit.services import audit_record, payment_event_record
from billing_project.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

CURRENCY = "usd"
CENT = Decimal("0.01")
OFFLINE_SESSION_PREFIX = "offline_"

CompletionHandler = Callable[..., object]
_completion_handlers: dict[str, CompletionHandler] = {}


class UnknownCheckoutKind(LookupError):
    """No app registered a handler for this checkout kind."""


@dataclass(frozen=True)
class Checkout:
    """A started checkout. `completed` is true when the payment already went through (offline
    provider); otherwise the customer pays at `url` and the webhook completes it."""

    url: str | None
    session_id: str
    completed: bool


def to_cents(amount_usd: Decimal) -> int:
    """Stripe amounts are integer cents; money is rounded half-up to the cent first."""
    return int(amount_usd.quantize(CENT, rounding=ROUND_HALF_UP) * 100)


def checkout_completion_register(kind: str, handler: CompletionHandler) -> None:
    """`handler(*, user_id, metadata, session_id, amount_usd)` applies a paid checkout of `kind`.
    It must be idempotent: a webhook may be delivered more than once."""
    _completion_handlers[kind] = handler


def checkout_completed(*, kind: str, user_id, metadata: dict, session_id: str, amount_usd: Decimal):
    """Applies a paid checkout through its kind's handler and returns what the handler returns."""
    handler = _completion_handlers.get(kind)
    if handler is None:
        raise UnknownCheckoutKind(f"No completion handler for checkout kind '{kind}'.")
    return handler(user_id=user_id, metadata=metadata, session_id=session_id, amount_usd=amount_usd)


def checkout_start(
    *,
    user,
    kind: str,
    amount_usd: Decimal,
    description: str,
    metadata: dict,
    success_url: str | None = None,
    cancel_url: str | None = None,
) -> Checkout:
    """Starts paying `amount_usd` for `kind`. `metadata` (string values) travels with the session
    and comes back to the completion handler, with `kind` added."""
    amount_usd = amount_usd.quantize(CENT, rounding=ROUND_HALF_UP)
    metadata = {"kind": kind, **{key: str(value) for key, value in metadata.items()}}
    if settings.STRIPE_SECRET_KEY:
        return _stripe_checkout(
            user=user,
            amount_usd=amount_usd,
            description=description,
            metadata=metadata,
            success_url=success_url,
            cancel_url=cancel_url,
        )
    return _offline_checkout(user=user, kind=kind, amount_usd=amount_usd, metadata=metadata)


def _stripe_checkout(*, user, amount_usd, description, metadata, success_url, cancel_url) -> Checkout:
    params = {
        "mode": "payment",
        "client_reference_id": str(user.pk),
        "metadata": metadata,
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": CURRENCY,
                    "unit_amount": to_cents(amount_usd),
                    "product_data": {"name": description},
                },
            }
        ],
    }
    if user.email:
        params["customer_email"] = user.email
    if success_url:
        params["success_url"] = success_url
    if cancel_url:
        params["cancel_url"] = cancel_url
    try:
        session = stripe.checkout.Session.create(api_key=settings.STRIPE_SECRET_KEY, **params)
    except stripe.StripeError as error:
        logger.warning("stripe checkout for %s failed: %s", metadata["kind"], error)
        raise ServiceUnavailable(
            "The payment provider could not start the checkout; retry shortly.", code="payment_provider_unavailable"
        ) from error
    return Checkout(url=session.url, session_id=session.id, completed=False)


def _offline_checkout(*, user, kind, amount_usd, metadata) -> Checkout:
    """Plays Stripe and its webhook: the payment event, its audit row and the completion, in the
    caller's transaction, so a failed completion leaves no payment behind."""
    session_id = f"{OFFLINE_SESSION_PREFIX}{uuid.uuid4().hex}"
    payment_event_record(
        event_type="checkout_completed",
        user=user,
        amount=to_cents(amount_usd),
        currency=CURRENCY,
        metadata={**metadata, "session_id": session_id, "provider": "offline"},
    )
    audit_record(
        action=AuditAction.PROCESS,
        resource_type="payments.checkout",
        resource_id=session_id,
        new_value={"kind": kind, "amount_usd": amount_usd, "metadata": metadata, "provider": "offline"},
    )
    checkout_completed(kind=kind, user_id=user.pk, metadata=metadata, session_id=session_id, amount_usd=amount_usd)
    return Checkout(url=None, session_id=session_id, completed=True)
