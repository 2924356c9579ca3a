"""Prices of licensing, computed without the database. Money is Decimal, rounded half-up to cents."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
HUNDRED = Decimal(100)


def money(amount) -> Decimal:
    return Decimal(amount).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class UpgradeQuote:
    list_price_usd: Decimal
    discount_usd: Decimal
    price_usd: Decimal
    early: bool


def upgrade_quote(
    *, purchased_at: datetime, now: datetime, list_price_usd: Decimal, discount_percent: Decimal, early_days: int
) -> UpgradeQuote:
    """The price of an upgrade: the list price, less `discount_percent` when bought within
    `early_days` of the license's purchase (the last day included)."""
    list_price = money(list_price_usd)
    early = now <= purchased_at + timedelta(days=early_days)
    discount = money(list_price * Decimal(discount_percent) / HUNDRED) if early else money(0)
    return UpgradeQuote(list_price_usd=list_price, discount_usd=discount, price_usd=list_price - discount, early=early)
