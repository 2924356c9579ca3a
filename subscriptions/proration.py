"""Proration arithmetic (pure): what a mid-period tier change costs and grants.

The fraction of the period left is exact (seconds left / seconds in the period); money is rounded
half-up to cents, credits down to whole credits (SPEC section 2).
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Proration:
    days_remaining: int
    days_in_cycle: int
    unused_credit_value_usd: Decimal
    new_tier_prorated_cost_usd: Decimal
    net_charge_usd: Decimal
    credits_adjustment: int


def fraction_left(*, period_start: datetime, period_end: datetime, at: datetime) -> Decimal:
    """Share of [period_start, period_end) still ahead at `at`, between 0 and 1."""
    total = Decimal((period_end - period_start).total_seconds())
    left = Decimal((period_end - max(at, period_start)).total_seconds())
    return min(max(left / total, Decimal(0)), Decimal(1))


def money(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def upgrade(
    *,
    old_price_usd: Decimal,
    new_price_usd: Decimal,
    old_credits: int,
    new_credits: int,
    period_start: datetime,
    period_end: datetime,
    at: datetime,
    credit_fraction_left: Decimal | None = None,
) -> Proration:
    """Upgrade now: the unused value of the old price is credited against the prorated new price.
    Credits: the difference of the allocations, prorated over what is left of the credit period
    (the billing period unless an annual plan passes its monthly slice's fraction)."""
    fraction = fraction_left(period_start=period_start, period_end=period_end, at=at)
    unused = money(old_price_usd * fraction)
    new_cost = money(new_price_usd * fraction)
    credit_fraction = fraction if credit_fraction_left is None else credit_fraction_left
    credits = int(((new_credits - old_credits) * credit_fraction).to_integral_value(rounding=ROUND_DOWN))
    return Proration(
        days_remaining=_whole_days((period_end - max(at, period_start)).total_seconds()),
        days_in_cycle=_whole_days((period_end - period_start).total_seconds()),
        unused_credit_value_usd=unused,
        new_tier_prorated_cost_usd=new_cost,
        net_charge_usd=max(new_cost - unused, Decimal("0.00")),
        credits_adjustment=max(credits, 0),
    )


def downgrade(*, period_start: datetime, period_end: datetime, at: datetime) -> Proration:
    """Downgrades wait for the period end: nothing is charged or refunded, no credits move now."""
    zero = Decimal("0.00")
    return Proration(
        days_remaining=_whole_days((period_end - max(at, period_start)).total_seconds()),
        days_in_cycle=_whole_days((period_end - period_start).total_seconds()),
        unused_credit_value_usd=zero,
        new_tier_prorated_cost_usd=zero,
        net_charge_usd=zero,
        credits_adjustment=0,
    )


def _whole_days(seconds: float) -> int:
    return int((Decimal(seconds) / SECONDS_PER_DAY).to_integral_value(rounding=ROUND_HALF_UP))
