"""Billing-period arithmetic (pure)."""

import calendar
from datetime import datetime

from billing_project.enums import BillingCycle


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later, clamped to the month's last day (Jan 31 + 1 = Feb 28/29)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def period_end(start: datetime, billing_cycle: str) -> datetime:
    return add_months(start, 12 if billing_cycle == BillingCycle.ANNUAL else 1)
