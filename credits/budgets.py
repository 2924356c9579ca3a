"""Monthly credit budgets: the arithmetic over the budget columns of a balance row (no database access).

A budget caps the credits usage spends in a calendar month (UTC). The month's spend is counted on the
balance row itself, under its lock, by every usage deduction; a new month starts from zero the first
time the row is spent in it (or read: a count of another month reads as zero). A reversal gives its
credits back to the budget only when the deduction it reverses was made in the current month: last
month's spend is history. Live holds count against a hard budget like they count against the balance,
so reservations cannot together exceed it either.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

# Soft thresholds, in percent of the budget: each is notified once per user and month.
BUDGET_THRESHOLDS = (50, 80, 100)


def month_key(moment: datetime) -> str:
    """The budget month of a moment, 'YYYY-MM' in UTC (formatted by hand: strftime took three times as
    long, once per user of a usage batch)."""
    moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


def month_start(moment: datetime) -> datetime:
    """The first instant of `moment`'s month (UTC)."""
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(moment: datetime) -> datetime:
    """The first instant of the month after `moment`'s (UTC): when a month's spend stops counting."""
    moment = moment.astimezone(UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def thresholds_crossed(*, monthly_credits: int, spent: int, notified_percent: int) -> list[int]:
    """The thresholds that `spent` has reached and that were not notified yet this month."""
    return [
        threshold
        for threshold in BUDGET_THRESHOLDS
        if threshold > notified_percent and spent * 100 >= threshold * monthly_credits
    ]


@dataclass(frozen=True)
class Budget:
    """A user's budget as of a moment: what `me/credits/` and `me/credits/budget/` show."""

    monthly_credits: int | None
    hard_limit: bool
    spent_this_month: int
    notified_percent: int

    @classmethod
    def of(
        cls, *, monthly_credits, hard_limit: bool, month: str, spent: int, notified_percent: int, this_month: str
    ) -> "Budget":
        """From the stored columns; counts of a month other than `this_month` (`month_key` of now) read as zero."""
        current = month == this_month
        return cls(
            monthly_credits=monthly_credits,
            hard_limit=hard_limit,
            spent_this_month=spent if current else 0,
            notified_percent=notified_percent if current else 0,
        )

    @property
    def remaining(self) -> int | None:
        """Credits left in this month's budget (live holds not deducted); None without a budget."""
        return None if self.monthly_credits is None else max(self.monthly_credits - self.spent_this_month, 0)

    @property
    def thresholds_notified(self) -> list[int]:
        return [threshold for threshold in BUDGET_THRESHOLDS if threshold <= self.notified_percent]

    def available(self, *, held: int) -> int | None:
        """Credits a hard budget still lets be spent or held now; None when nothing is enforced."""
        if not self.hard_limit or self.monthly_credits is None:
            return None
        return max(self.monthly_credits - self.spent_this_month - held, 0)

    def as_dict(self) -> dict:
        return {
            "monthly_credits": self.monthly_credits,
            "hard_limit": self.hard_limit,
            "spent_this_month": self.spent_this_month,
            "remaining": self.remaining,
            "thresholds_notified": self.thresholds_notified,
        }
