"""Proration arithmetic (pure): what a mid-period tier change costs and grants.

The fraction of the period left is exact: integer microseconds left over integer microseconds in the
period, kept as a `Fraction`. Every amount multiplies by it before anything is rounded, once, at the
end: money half-up to cents, credits down to whole credits (SPEC section 2; billing_project.money).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from billing_project.money import ZERO_USD, credits_floor, exact, round_half_up, usd_round

MICROSECOND = timedelta(microseconds=1)
MICROSECONDS_PER_DAY = 86_400 * 1_000_000


@dataclass(frozen=True)
class Proration:
    days_remaining: int
    days_in_cycle: int
    unused_credit_value_usd: Decimal
    new_tier_prorated_cost_usd: Decimal
    net_charge_usd: Decimal
    credits_adjustment: int


def _microseconds(span: timedelta) -> int:
    return span // MICROSECOND


def fraction_left(*, period_start: datetime, period_end: datetime, at: datetime) -> Fraction:
    """Share of [period_start, period_end) still ahead at `at`, between 0 and 1, exactly."""
    total = _microseconds(period_end - period_start)
    left = _microseconds(period_end - max(at, period_start))
    return min(max(Fraction(left, total), Fraction(0)), Fraction(1))


def upgrade(
    *,
    old_price_usd: Decimal,
    new_price_usd: Decimal,
    old_credits: int,
    new_credits: int,
    period_start: datetime,
    period_end: datetime,
    at: datetime,
    credit_fraction_left: Fraction | Decimal | None = None,
) -> Proration:
    """Upgrade now: the unused value of the old price is credited against the prorated new price.
    Credits: the difference of the allocations, prorated over what is left of the credit period
    (the billing period unless an annual plan passes its monthly slice's fraction)."""
    fraction = fraction_left(period_start=period_start, period_end=period_end, at=at)
    unused = usd_round(exact(old_price_usd) * fraction)
    new_cost = usd_round(exact(new_price_usd) * fraction)
    credit_fraction = fraction if credit_fraction_left is None else exact(credit_fraction_left)
    credits = credits_floor((new_credits - old_credits) * credit_fraction)
    return Proration(
        days_remaining=_whole_days(period_end - max(at, period_start)),
        days_in_cycle=_whole_days(period_end - period_start),
        unused_credit_value_usd=unused,
        new_tier_prorated_cost_usd=new_cost,
        net_charge_usd=max(new_cost - unused, ZERO_USD),
        credits_adjustment=max(credits, 0),
    )


def downgrade(*, period_start: datetime, period_end: datetime, at: datetime) -> Proration:
    """Downgrades wait for the period end: nothing is charged or refunded, no credits move now."""
    return Proration(
        days_remaining=_whole_days(period_end - max(at, period_start)),
        days_in_cycle=_whole_days(period_end - period_start),
        unused_credit_value_usd=ZERO_USD,
        new_tier_prorated_cost_usd=ZERO_USD,
        net_charge_usd=ZERO_USD,
        credits_adjustment=0,
    )


def _whole_days(span: timedelta) -> int:
    """Days rounded half-up, for display (days_remaining, days_in_cycle)."""
    return max(round_half_up(Fraction(_microseconds(span), MICROSECONDS_PER_DAY)), 0)
