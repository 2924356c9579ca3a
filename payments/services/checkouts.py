"""Checkouts: a payment the customer makes on Stripe's hosted page (a subscription's first period, a
license, a license upgrade). The operation is opened in the caller's transaction; `checkout_run`, with
no transaction open, creates the session (or, offline, completes at once)."""

from dataclasses import dataclass
from decimal import Decimal

from billing_project.money import major_to_minor, minor_to_major
from payments.models import OperationState, PaymentOperation
from payments.services.customers import customer_id_of
from payments.services.operations import operation_open, operation_run


@dataclass(frozen=True)
class Checkout:
    """A started checkout. `completed` is true when the payment already went through (offline
    provider); otherwise the customer pays at `url` and the webhook completes it."""

    url: str | None
    session_id: str
    completed: bool
    operation_id: str


def checkout_of(operation: PaymentOperation) -> Checkout:
    return Checkout(
        url=operation.stripe_objects.get("checkout_url"),
        session_id=operation.stripe_checkout_session_id,
        completed=operation.state == OperationState.SUCCEEDED,
        operation_id=str(operation.pk),
    )


def checkout_open(
    *,
    kind: str,
    user,
    subject,
    amount_usd: Decimal,
    description: str,
    metadata: dict,
    plan_code: str,
    interval: str | None = None,
    discount_usd: Decimal = Decimal("0.00"),
    coupon_name: str = "",
    success_url: str | None = None,
    cancel_url: str | None = None,
    currency: str = "usd",
) -> PaymentOperation:
    """Records a checkout of `amount_usd` less `discount_usd` once (a coupon: the first period only
    when recurring); both are in the major unit of `currency` (USD unless said otherwise). `metadata`
    (string values) travels with the session and comes back with its events; with `interval`
    ("month" or "year") Stripe bills it as a subscription carrying it too."""
    list_amount = major_to_minor(amount_usd, currency)
    discount = min(major_to_minor(discount_usd, currency), list_amount)
    return operation_open(
        kind=kind,
        user=user,
        subject=subject,
        amount_usd=minor_to_major(list_amount - discount, currency),
        currency=currency,
        description=description,
        stripe_customer_id=customer_id_of(user_id=user.pk) or "",
        params={
            "metadata": {key: str(value) for key, value in metadata.items()},
            "plan_code": plan_code,
            "list_amount": list_amount,
            "discount": discount,
            "coupon_name": coupon_name,
            "interval": interval,
            "success_url": success_url,
            "cancel_url": cancel_url,
        },
    )


def checkout_run(*, operation: PaymentOperation) -> Checkout:
    """Creates the checkout session (or completes an offline checkout) of an open operation."""
    return checkout_of(operation_run(operation_id=operation.pk))
