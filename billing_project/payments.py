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
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import stripe
from django.conf import settings

from audit.models import AuditAction
from audit.services import audit_record, payment_event_record
from billing_project.errors import PaymentRequired, ServiceUnavailable

logger = logging.getLogger(__name__)

CURRENCY = "usd"
CENT = Decimal("0.01")
OFFLINE_SESSION_PREFIX = "offline_"

CompletionHandler = Callable[..., object]
_completion_handlers: dict[str, CompletionHandler] = {}


class UnknownCheckoutKind(LookupError):
    """No app registered a handler for this checkout kind."""


class PaymentDeclined(PaymentRequired):
    code = "payment_declined"
    title = "Payment declined"


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
    recurring_interval: str | None = None,
    discount_usd: Decimal = Decimal("0.00"),
) -> Checkout:
    """Starts paying `amount_usd` for `kind`, less `discount_usd` once (a coupon: on the first
    period only when recurring). `metadata` (string values) travels with the session and comes back
    to the completion handler, with `kind` added. With `recurring_interval` ("month" or "year")
    Stripe bills it as a subscription, which carries the same metadata."""
    amount_usd = amount_usd.quantize(CENT, rounding=ROUND_HALF_UP)
    discount_usd = min(discount_usd.quantize(CENT, rounding=ROUND_HALF_UP), amount_usd)
    metadata = {"kind": kind, **{key: str(value) for key, value in metadata.items()}}
    if settings.STRIPE_SECRET_KEY:
        return _stripe_checkout(
            user=user,
            amount_usd=amount_usd,
            description=description,
            metadata=metadata,
            success_url=success_url,
            cancel_url=cancel_url,
            recurring_interval=recurring_interval,
            discount_usd=discount_usd,
        )
    return _offline_checkout(user=user, kind=kind, amount_usd=amount_usd - discount_usd, metadata=metadata)


def _price_data(*, amount_usd: Decimal, description: str, recurring_interval: str | None) -> dict:
    price_data = {"currency": CURRENCY, "unit_amount": to_cents(amount_usd), "product_data": {"name": description}}
    if recurring_interval:
        price_data["recurring"] = {"interval": recurring_interval}
    return price_data


def _stripe_coupon_once(*, discount_usd: Decimal, name: str) -> str:
    """A Stripe coupon worth `discount_usd` off one invoice; our own coupon rules stay here, Stripe
    only applies the amount."""
    coupon = stripe.Coupon.create(
        api_key=settings.STRIPE_SECRET_KEY,
        amount_off=to_cents(discount_usd),
        currency=CURRENCY,
        duration="once",
        name=name[:40],
    )
    return coupon.id


def _stripe_checkout(
    *, user, amount_usd, description, metadata, success_url, cancel_url, recurring_interval, discount_usd
) -> Checkout:
    params = {
        "mode": "subscription" if recurring_interval else "payment",
        "client_reference_id": str(user.pk),
        "metadata": metadata,
        "line_items": [
            {
                "quantity": 1,
                "price_data": _price_data(
                    amount_usd=amount_usd, description=description, recurring_interval=recurring_interval
                ),
            }
        ],
    }
    if recurring_interval:
        params["subscription_data"] = {"metadata": metadata}
    if user.email:
        params["customer_email"] = user.email
    if success_url:
        params["success_url"] = success_url
    if cancel_url:
        params["cancel_url"] = cancel_url
    with _stripe_errors_mapped(f"checkout for {metadata['kind']}"):
        if discount_usd > 0:
            coupon_id = _stripe_coupon_once(discount_usd=discount_usd, name=f"Coupon {metadata.get('coupon_code', '')}")
            params["discounts"] = [{"coupon": coupon_id}]
        session = stripe.checkout.Session.create(api_key=settings.STRIPE_SECRET_KEY, **params)
    return Checkout(url=session.url, session_id=session.id, completed=False)


@contextmanager
def _stripe_errors_mapped(what: str):
    """A declined card is the customer's 402; any other Stripe failure is a 503 to retry later."""
    try:
        yield
    except stripe.CardError as error:
        raise PaymentDeclined(error.user_message or "The card was declined.") from error
    except stripe.StripeError as error:
        logger.warning("stripe %s failed: %s", what, error)
        raise ServiceUnavailable(
            "The payment provider did not answer as expected; retry shortly.", code="payment_provider_unavailable"
        ) from error


def stripe_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def invoice_collect(*, provider_invoice_id: str) -> None:
    """Asks Stripe to charge an open invoice again (a dunning retry). Raises PaymentDeclined when
    the card is refused. The offline provider has nothing to collect: its payments never fail."""
    if not stripe_enabled():
        return
    with _stripe_errors_mapped("invoice retry"):
        stripe.Invoice.pay(provider_invoice_id, api_key=settings.STRIPE_SECRET_KEY)


def charge_now(*, customer_id: str | None, amount_usd: Decimal, description: str, metadata: dict) -> str | None:
    """Charges a one-off amount to the customer's saved card and returns Stripe's invoice id (None
    offline, where the charge always succeeds). Raises PaymentDeclined when the card is refused."""
    if not stripe_enabled():
        return None
    if not customer_id:
        raise PaymentRequired(
            "There is no card on file for this subscription; start a checkout first.", code="payment_method_required"
        )
    metadata = {key: str(value) for key, value in metadata.items()}
    with _stripe_errors_mapped("one-off charge"):
        stripe.InvoiceItem.create(
            api_key=settings.STRIPE_SECRET_KEY,
            customer=customer_id,
            amount=to_cents(amount_usd),
            currency=CURRENCY,
            description=description,
        )
        invoice = stripe.Invoice.create(
            api_key=settings.STRIPE_SECRET_KEY,
            customer=customer_id,
            description=description,
            metadata=metadata,
            pending_invoice_items_behavior="include",
            auto_advance=False,
        )
        stripe.Invoice.pay(invoice.id, api_key=settings.STRIPE_SECRET_KEY)
    return invoice.id


def provider_subscription_cancel(*, provider_subscription_id: str | None, at_period_end: bool) -> None:
    """Stops Stripe billing the subscription, now or when the period ends."""
    if not stripe_enabled() or not provider_subscription_id:
        return
    with _stripe_errors_mapped("subscription cancel"):
        if at_period_end:
            stripe.Subscription.modify(
                provider_subscription_id, api_key=settings.STRIPE_SECRET_KEY, cancel_at_period_end=True
            )
        else:
            stripe.Subscription.cancel(provider_subscription_id, api_key=settings.STRIPE_SECRET_KEY)


def provider_subscription_reprice(
    *,
    provider_subscription_id: str | None,
    amount_usd: Decimal,
    recurring_interval: str,
    metadata: dict,
) -> None:
    """Bills the subscription at a new recurring price from its next invoice on; the change in this
    period is charged separately (`charge_now`), so Stripe is told not to prorate."""
    if not stripe_enabled() or not provider_subscription_id:
        return
    with _stripe_errors_mapped("subscription reprice"):
        subscription = stripe.Subscription.retrieve(provider_subscription_id, api_key=settings.STRIPE_SECRET_KEY)
        item = subscription["items"]["data"][0]
        # A subscription item's inline price names the existing product (no product_data there).
        stripe.Subscription.modify(
            provider_subscription_id,
            api_key=settings.STRIPE_SECRET_KEY,
            items=[
                {
                    "id": item["id"],
                    "price_data": {
                        "currency": CURRENCY,
                        "unit_amount": to_cents(amount_usd),
                        "recurring": {"interval": recurring_interval},
                        "product": item["price"]["product"],
                    },
                }
            ],
            metadata={key: str(value) for key, value in metadata.items()},
            proration_behavior="none",
        )


def provider_subscription_discount_once(
    *, provider_subscription_id: str | None, discount_usd: Decimal, name: str
) -> None:
    """Takes `discount_usd` off the subscription's next Stripe invoice (a redeemed coupon)."""
    if not stripe_enabled() or not provider_subscription_id:
        return
    with _stripe_errors_mapped("subscription discount"):
        coupon_id = _stripe_coupon_once(discount_usd=discount_usd, name=name)
        stripe.Subscription.modify(
            provider_subscription_id, api_key=settings.STRIPE_SECRET_KEY, discounts=[{"coupon": coupon_id}]
        )


def provider_subscription_extend(*, provider_subscription_id: str | None, until: datetime) -> None:
    """Bills the subscription next at `until` instead of its period end (free time from a coupon):
    Stripe's way is a trial until then, with nothing prorated."""
    if not stripe_enabled() or not provider_subscription_id:
        return
    with _stripe_errors_mapped("subscription extension"):
        stripe.Subscription.modify(
            provider_subscription_id,
            api_key=settings.STRIPE_SECRET_KEY,
            trial_end=int(until.timestamp()),
            proration_behavior="none",
        )


def _offline_checkout(*, user, kind, amount_usd, metadata) -> Checkout:
    """Plays Stripe and its webhook: the payment event, its audit row and the completion, in the
    caller's transaction, so a failed completion leaves no payment behind."""
    session_id = f"{OFFLINE_SESSION_PREFIX}{uuid.uuid4().hex}"
    payment_event_record(
        event_type="checkout_completed",
        user=user,
        plan_code=metadata.get("tier", kind),
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
