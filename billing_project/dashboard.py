"""The staff dashboard of the admin console: daily figures over a chosen range, aggregated in the
database from the daily summaries (usage rollups, coupon snapshots) and the payments, and drawn in
the browser by uPlot from the project's static files. Like urls.py it sits on top of every app."""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import Count, F, Sum
from django.db.models.functions import TruncDate
from django.template.response import TemplateResponse
from django.utils import timezone

from billing_project.fields import DATE_MAX, DATE_MIN
from billing_project.money import minor_to_major, usd_round
from coupons.models import CouponAnalyticsSnapshot
from credits.models import CreditUsageDailySummary, TokenUsageDailySummary
from credits.services.ledger import days_between
from payments.models import OperationKind, Payment
from subscriptions.models import LIVE_STATUSES, PaymentStatus, PaymentTransaction, Subscription

DEFAULT_DAYS = 30
LICENSE_SALE_KINDS = (OperationKind.LICENSE_CHECKOUT, OperationKind.LICENSE_UPGRADE_CHECKOUT)
LONGEST_RANGE_DAYS = 366
# The dashboard reads these tables: it needs the view permission of each.
DASHBOARD_PERMISSIONS = (
    "credits.view_creditusagedailysummary",
    "credits.view_tokenusagedailysummary",
    "subscriptions.view_paymenttransaction",
    "payments.view_payment",
    "subscriptions.view_subscription",
    "coupons.view_couponanalyticssnapshot",
)


class RangeForm(forms.Form):
    # Bounded like the API's dates: a day past 9999-12-31 does not exist to end a range on.
    date_from = forms.DateField(
        widget=forms.DateInput(attrs={"type": "date"}),
        validators=[MinValueValidator(DATE_MIN), MaxValueValidator(DATE_MAX)],
    )
    date_to = forms.DateField(
        widget=forms.DateInput(attrs={"type": "date"}),
        validators=[MinValueValidator(DATE_MIN), MaxValueValidator(DATE_MAX)],
    )

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and not 0 <= (end - start).days < LONGEST_RANGE_DAYS:
            raise forms.ValidationError(f"Choose a range of 1 to {LONGEST_RANGE_DAYS} days, from before to.")
        return cleaned


@dataclass(frozen=True)
class Dashboard:
    days: list[date]
    credits_used: list[int]
    revenue_by_currency: dict[str, list[Decimal]]
    gross_margin_usd: list[Decimal]
    coupon_redemptions: list[int]
    active_subscriptions_by_tier: dict[str, int]

    @property
    def revenue_usd(self) -> list[Decimal]:
        return self.revenue_by_currency.get("usd") or [Decimal("0.00")] * len(self.days)

    @property
    def revenue_totals(self) -> dict[str, Decimal]:
        """Revenue over the range per currency: never added across currencies, never converted."""
        return {currency: sum(values, Decimal(0)) for currency, values in self.revenue_by_currency.items()}

    @property
    def totals(self) -> dict:
        return {
            "credits_used": sum(self.credits_used),
            "revenue_usd": sum(self.revenue_usd, Decimal("0.00")),
            "gross_margin_usd": sum(self.gross_margin_usd, Decimal("0.00")),
            "coupon_redemptions": sum(self.coupon_redemptions),
            "active_subscriptions": sum(self.active_subscriptions_by_tier.values()),
        }

    def charts(self) -> list[dict]:
        """What each chart draws and on which axis: counts start at zero with whole-number ticks,
        revenue has one series and one axis per currency (never converted), gross margin its own axis."""
        counts = {"begin_at_zero": True, "integer": True}
        money_series = [
            {
                "label": f"Revenue ({currency.upper()})",
                "values": [str(value) for value in values],
                "axis": f"revenue_{currency}",
            }
            for currency, values in self.revenue_by_currency.items()
        ]
        money_axes = {
            f"revenue_{currency}": {"label": f"Revenue ({currency.upper()})", "begin_at_zero": True, "integer": False}
            for currency in self.revenue_by_currency
        }
        tiers = list(self.active_subscriptions_by_tier)
        return [
            {
                "element": "chart-credits",
                "x": "days",
                "series": [{"label": "Credits used", "values": self.credits_used, "axis": "credits"}],
                "axes": {"credits": {"label": "Credits", **counts}},
            },
            {
                "element": "chart-money",
                "x": "days",
                "series": [
                    *money_series,
                    {
                        "label": "Gross margin (USD)",
                        "values": [str(value) for value in self.gross_margin_usd],
                        "axis": "gross_margin_usd",
                    },
                ],
                "axes": {
                    **money_axes,
                    "gross_margin_usd": {"label": "Gross margin (USD)", "begin_at_zero": True, "integer": False},
                },
            },
            {
                "element": "chart-coupons",
                "x": "days",
                "bars": True,
                "series": [{"label": "Redemptions", "values": self.coupon_redemptions, "axis": "redemptions"}],
                "axes": {"redemptions": {"label": "Redemptions", **counts}},
            },
            {
                "element": "chart-tiers",
                "x": "categories",
                "categories": tiers,
                "bars": True,
                "series": [
                    {
                        "label": "Active subscriptions",
                        "values": [self.active_subscriptions_by_tier[tier] for tier in tiers],
                        "axis": "subscriptions",
                    }
                ],
                "axes": {"subscriptions": {"label": "Subscriptions", **counts}},
            },
        ]

    def as_chart_data(self) -> dict:
        return {
            "charts": self.charts(),
            "days": [day.isoformat() for day in self.days],
            "credits_used": self.credits_used,
            "revenue_usd": [str(value) for value in self.revenue_usd],
            "revenue_by_currency": {
                currency: [str(value) for value in values] for currency, values in self.revenue_by_currency.items()
            },
            "gross_margin_usd": [str(value) for value in self.gross_margin_usd],
            "coupon_redemptions": self.coupon_redemptions,
            "active_subscriptions_by_tier": self.active_subscriptions_by_tier,
        }


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _per_day(rows, days: list[date], zero):
    by_day = {row["day"]: row["total"] or zero for row in rows}
    return [by_day.get(day, zero) for day in days]


def _cents(values: list[Decimal]) -> list[Decimal]:
    return [usd_round(value) for value in values]


def _by_currency(*sources, days: list[date]) -> dict[str, list[Decimal]]:
    """Daily revenue in each currency's own unit (minor units summed over the sources, then shown exactly)."""
    minor: dict[str, dict] = {}
    for row in (row for rows in sources for row in rows):
        by_day = minor.setdefault(row["currency"], {})
        by_day[row["day"]] = by_day.get(row["day"], 0) + (row["total"] or 0)
    return {
        currency: [minor_to_major(by_day.get(day, 0), currency) for day in days] for currency, by_day in minor.items()
    }


def dashboard_figures(*, date_from: date, date_to: date) -> Dashboard:
    """One grouped query per series over the range; days without rows are zero."""
    days = days_between(date_from, date_to)
    in_range = {"summary_date__gte": date_from, "summary_date__lte": date_to}
    credits = CreditUsageDailySummary.objects.filter(**in_range).values(day=F("summary_date"))
    margin = TokenUsageDailySummary.objects.filter(**in_range).values(day=F("summary_date"))
    payments = (
        PaymentTransaction.objects.filter(
            status__in=(PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED),
            completed_at__gte=_start_of(date_from),
            completed_at__lt=_start_of(date_to + timedelta(days=1)),
        )
        .annotate(day=TruncDate("completed_at"))
        .values("day", "currency")
        .annotate(total=Sum("amount") - Sum("refunded_amount"))
        .order_by("currency", "day")
    )
    # License sales are not invoiced: their money received is the payment of the license checkout.
    license_sales = (
        Payment.objects.filter(
            kind__in=LICENSE_SALE_KINDS,
            paid_at__gte=_start_of(date_from),
            paid_at__lt=_start_of(date_to + timedelta(days=1)),
        )
        .annotate(day=TruncDate("paid_at"))
        .values("day", "currency")
        .annotate(total=Sum("amount") - Sum("amount_refunded"))
        .order_by("currency", "day")
    )
    redemptions = CouponAnalyticsSnapshot.objects.filter(
        snapshot_date__gte=date_from, snapshot_date__lte=date_to
    ).values(day=F("snapshot_date"))
    tiers = (
        Subscription.objects.filter(status__in=LIVE_STATUSES)
        .values("tier")
        .annotate(count=Count("pk"))
        .order_by("tier")
    )
    return Dashboard(
        days=days,
        credits_used=_per_day(credits.annotate(total=Sum("total_deductions")), days, 0),
        revenue_by_currency=_by_currency(payments, license_sales, days=days),
        gross_margin_usd=_cents(_per_day(margin.annotate(total=Sum("total_gross_margin")), days, Decimal(0))),
        coupon_redemptions=_per_day(redemptions.annotate(total=Sum("redemptions")), days, 0),
        active_subscriptions_by_tier={row["tier"]: row["count"] for row in tiers},
    )


def dashboard_view(request):
    if not request.user.has_perms(DASHBOARD_PERMISSIONS):
        raise PermissionDenied
    today = timezone.localdate()
    form = RangeForm(request.GET or {"date_from": today - timedelta(days=DEFAULT_DAYS - 1), "date_to": today})
    figures = dashboard_figures(**form.cleaned_data) if form.is_valid() else None
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "form": form,
        "figures": figures,
        "chart_data": figures.as_chart_data() if figures else None,
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
