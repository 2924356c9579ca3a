"""Coupons at subscription start. The coupons app sits above subscriptions (SPEC 0), so it plugs its
two functions in here from its AppConfig.ready(); subscriptions never imports it.

- `apply` reserves the coupon for a checkout (a pending redemption that takes a use) and says how
  much it takes off the first period, or raises the refusal's domain error;
- `confirm` marks that redemption successful when the checkout is paid, linked to the subscription
  and in the currency the checkout was paid in, and returns the discount again for the invoice. It
  is idempotent, as webhooks are redelivered;
- `release` gives the coupon back when the checkout ends unpaid.
"""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class CheckoutDiscount:
    redemption_id: str
    coupon_code: str
    discount_usd: Decimal


@dataclass(frozen=True)
class _Handlers:
    apply: Callable[..., CheckoutDiscount]
    confirm: Callable[..., Decimal]
    release: Callable[..., bool]


_handlers: _Handlers | None = None


class CouponsUnavailable(LookupError):
    """A coupon was given but the coupons app registered no handlers (it is not installed)."""


def discount_handlers_register(
    *, apply: Callable[..., CheckoutDiscount], confirm: Callable[..., Decimal], release: Callable[..., bool]
) -> None:
    global _handlers
    _handlers = _Handlers(apply=apply, confirm=confirm, release=release)


def _registered() -> _Handlers:
    if _handlers is None:
        raise CouponsUnavailable("No coupon handlers are registered.")
    return _handlers


def checkout_discount_apply(*, user, code: str, tier: str, billing_cycle: str, amount_usd: Decimal, client):
    return _registered().apply(
        user=user, code=code, tier=tier, billing_cycle=billing_cycle, amount_usd=amount_usd, client=client
    )


def checkout_discount_confirm(*, redemption_id: str, subscription, currency: str = "usd") -> Decimal:
    return _registered().confirm(redemption_id=redemption_id, subscription=subscription, currency=currency)


def checkout_discount_release(*, redemption_id: str) -> bool:
    return _registered().release(redemption_id=redemption_id)
