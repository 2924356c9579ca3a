"""Prices of licensing, computed without the database. Money is Decimal, rounded half-up to cents."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from billing_project.money import usd_round

HUNDRED = Decimal(100)


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
    list_price = usd_round(list_price_usd)
    early = now <= purchased_at + timedelta(days=early_days)
    discount = usd_round(list_price * Decimal(discount_percent) / HUNDRED) if early else usd_round(0)
    return UpgradeQuote(list_price_usd=list_price, discount_usd=discount, price_usd=list_price - discount, early=early)
