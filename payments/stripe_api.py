"""The Stripe client and the meaning of its failures.

One `stripe.StripeClient` per configuration: the API address (`STRIPE_API_BASE`, Stripe's by default,
an emulator in tests and staging), explicit connect and read timeouts and a bounded number of network
retries, so that a hanging Stripe costs a request at most about
`(connect + read) * (1 + retries)` seconds, well under gunicorn's worker timeout. The SDK's retries
reuse the request's idempotency key, so a retried POST never does its work twice at Stripe.

Failures, as the API answers them:
- a declined card: 402 `payment_declined`, nothing applied;
- a card that needs the customer (3-D Secure): `PaymentActionRequired`, the operation waits;
- Stripe unreachable, timing out, rate limiting or failing (5xx): 503 `payment_provider_unavailable`
  with `Retry-After`; the operation keeps its state and any retry resumes it;
- a request Stripe refuses (invalid request, authentication, permission, idempotency): 502
  `payment_provider_error`, logged at ERROR with Stripe's request id; retrying would not help.
"""

import functools
import logging

import stripe
from django.conf import settings
from rest_framework import status

from billing_project.errors import DomainError, PaymentRequired, ServiceUnavailable
from payments.codes import ErrorCode

logger = logging.getLogger(__name__)

PROVIDER_RETRY_AFTER_SECONDS = 30
# Stripe's code for a payment that needs the customer (3-D Secure) rather than a decline.
ACTION_REQUIRED_CODES = frozenset({"invoice_payment_intent_requires_action", "authentication_required"})


class PaymentDeclined(PaymentRequired):
    code = ErrorCode.PAYMENT_DECLINED
    title = "Payment declined"


class PaymentActionRequired(PaymentRequired):
    """The card needs the customer's confirmation; the payment waits for it."""

    code = ErrorCode.PAYMENT_ACTION_REQUIRED
    title = "Payment needs the customer's action"


class ProviderUnavailable(ServiceUnavailable):
    code = ErrorCode.PROVIDER_UNAVAILABLE
    title = "Payment provider unavailable"


class ProviderError(DomainError):
    status = status.HTTP_502_BAD_GATEWAY
    code = ErrorCode.PROVIDER_ERROR
    title = "Payment provider error"


@functools.cache
def _client(api_key: str, api_base: str, connect: float, read: float, retries: int) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        max_network_retries=retries,
        http_client=stripe.RequestsClient(timeout=(connect, read)),
    )


def client() -> stripe.StripeClient:
    return _client(
        settings.STRIPE_SECRET_KEY,
        settings.STRIPE_API_BASE,
        settings.STRIPE_CONNECT_TIMEOUT_SECONDS,
        settings.STRIPE_READ_TIMEOUT_SECONDS,
        settings.STRIPE_MAX_NETWORK_RETRIES,
    )


def options(idempotency_key: str) -> dict:
    return {"idempotency_key": idempotency_key}


def mapped_error(error: stripe.StripeError, *, what: str) -> DomainError:
    """The domain error a Stripe failure of `what` means for our caller."""
    if isinstance(error, stripe.CardError):
        if error.code in ACTION_REQUIRED_CODES:
            return PaymentActionRequired(error.user_message or "The payment needs the customer's confirmation.")
        return PaymentDeclined(
            error.user_message or "The card was declined.", extra={"decline_code": error.code or "card_declined"}
        )
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError) or (
        isinstance(error, stripe.APIError) and (error.http_status or 500) >= 500
    ):
        logger.warning("stripe %s: provider unavailable (%s, request %s)", what, error, error.request_id)
        return ProviderUnavailable(
            "The payment provider did not answer in time; retry shortly.",
            extra={"retry_after": PROVIDER_RETRY_AFTER_SECONDS},
        )
    logger.error(
        "stripe %s refused: %s (status %s, code %s, request %s)",
        what,
        error.user_message or str(error),
        error.http_status,
        error.code,
        error.request_id,
    )
    return ProviderError(
        "The payment provider refused the request; this is not solved by retrying.",
        extra={"provider_request_id": error.request_id or "", "provider_code": error.code or ""},
    )


def object_read(kind: str, object_id: str) -> dict | None:
    """The current state of a Stripe object (`customer`, `subscription`, `invoice` or
    `checkout.session`) as a plain dict, None when Stripe has no such object. A read: no
    idempotency key, and never inside a transaction."""
    resources = {
        "customer": lambda v1: v1.customers,
        "subscription": lambda v1: v1.subscriptions,
        "invoice": lambda v1: v1.invoices,
        "checkout.session": lambda v1: v1.checkout.sessions,
    }
    try:
        return resources[kind](client().v1).retrieve(object_id).to_dict()
    except stripe.StripeError as error:
        if error.code == "resource_missing":
            return None
        raise mapped_error(error, what=f"{kind} read") from error
