"""Staff lists of coupons, campaigns, redemptions and fraud detections, and the performance report."""

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from django.db.models import Count, F, Max, QuerySet, Sum

from coupons.models import Coupon, CouponAnalyticsSnapshot, CouponCampaign, CouponFraudDetection, CouponRedemption


def coupons_for_staff() -> QuerySet:
    return (
        Coupon.objects.select_related("created_by", "deleted_by", "usage")
        .prefetch_related("campaign_links")
        .order_by("-created_at")
    )


def redemptions_of_coupon(*, coupon_id) -> QuerySet:
    return CouponRedemption.objects.filter(coupon_id=coupon_id).select_related("user").order_by("-redemption_date")


def campaigns_for_staff() -> QuerySet:
    return CouponCampaign.objects.annotate(coupon_count=Count("coupon_links")).order_by("-starts_at")


def coupons_of_campaign(*, campaign_id) -> QuerySet:
    return coupons_for_staff().filter(campaign_links__campaign_id=campaign_id)


def fraud_detections_for_staff() -> QuerySet:
    return CouponFraudDetection.objects.select_related("coupon", "user", "resolved_by").order_by("-detected_at")


@dataclass(frozen=True)
class PerformanceRow:
    """`discount_total_usd` and `revenue_usd` are the USD redemptions' (the contract's names);
    `by_currency` has every currency's, each in its own unit, never converted."""

    key: str
    name: str
    redemptions: int
    failed_redemptions: int
    unique_users: int
    discount_total_usd: Decimal
    revenue_usd: Decimal
    conversions: int
    by_currency: dict[str, dict[str, Decimal]] = field(default_factory=dict)

    @property
    def conversion_rate(self) -> Decimal:
        if not self.unique_users:
            return Decimal("0.0000")
        return (Decimal(self.conversions) / self.unique_users).quantize(Decimal("0.0001"))


@dataclass(frozen=True)
class PerformanceReport:
    date_from: date
    date_to: date
    totals: PerformanceRow
    by_coupon: list[PerformanceRow]
    by_campaign: list[PerformanceRow]


SNAPSHOT_SUMS = {
    "redemptions": Sum("redemptions"),
    "failed_redemptions": Sum("failed_redemptions"),
    "unique_users": Sum("unique_users"),
    "conversions": Sum("conversions"),
}


MONEY_FIGURES = ("discount_total", "revenue")


def _money_of(snapshot: dict) -> dict:
    """A snapshot's money per currency; one taken before currencies were kept had only USD."""
    if snapshot["money_by_currency"]:
        return snapshot["money_by_currency"]
    return {"usd": {"discount_total": snapshot["discount_total_usd"], "revenue": snapshot["revenue_usd"]}}


def _money_by(snapshots: QuerySet, group: str | None) -> dict:
    """Money per group (a coupon, a campaign, or all) and currency, summed from the snapshots."""
    sums: dict = {}
    fields = ["money_by_currency", "discount_total_usd", "revenue_usd", *([group] if group else [])]
    for snapshot in snapshots.values(*fields):
        by_currency = sums.setdefault(str(snapshot[group] or "") if group else "", {})
        for currency, figures in _money_of(snapshot).items():
            totals = by_currency.setdefault(currency, dict.fromkeys(MONEY_FIGURES, Decimal("0.00")))
            for name in MONEY_FIGURES:
                totals[name] += Decimal(str(figures.get(name) or 0))
    return {key: dict(sorted(by_currency.items())) for key, by_currency in sums.items()}


def _row(key: str, name: str, sums: dict, by_currency: dict | None = None) -> PerformanceRow:
    by_currency = by_currency or {}
    usd = by_currency.get("usd", {})
    return PerformanceRow(
        key=key,
        name=name,
        redemptions=sums["redemptions"] or 0,
        failed_redemptions=sums["failed_redemptions"] or 0,
        unique_users=sums["unique_users"] or 0,
        discount_total_usd=usd.get("discount_total", Decimal("0.00")),
        revenue_usd=usd.get("revenue", Decimal("0.00")),
        conversions=sums["conversions"] or 0,
        by_currency=by_currency,
    )


def coupon_performance(*, date_from: date, date_to: date, campaign_id=None, coupon_id=None) -> PerformanceReport:
    """Redemptions, discount given, revenue after discount and conversions to paid, by coupon and
    by campaign, summed from the daily snapshots (`snapshot_coupon_analytics`) of the range.
    Unique users are summed per day: a user redeeming on two days counts twice. Money is summed per
    currency, never converted: `discount_total_usd` and `revenue_usd` are the USD redemptions',
    `by_currency` every currency's."""
    snapshots = CouponAnalyticsSnapshot.objects.filter(snapshot_date__gte=date_from, snapshot_date__lte=date_to)
    if coupon_id is not None:
        snapshots = snapshots.filter(coupon_id=coupon_id)
    if campaign_id is not None:
        snapshots = snapshots.filter(coupon__campaign_links__campaign_id=campaign_id)
    campaign = "coupon__campaign_links__campaign_id"
    coupon_money, campaign_money = _money_by(snapshots, "coupon_id"), _money_by(snapshots, campaign)
    by_coupon = [
        _row(str(sums["coupon_id"]), sums.pop("coupon__code"), sums, coupon_money.get(str(sums["coupon_id"])))
        for sums in snapshots.values("coupon_id", "coupon__code").annotate(**SNAPSHOT_SUMS).order_by("coupon__code")
    ]
    by_campaign = [
        _row(
            str(sums[campaign] or ""),
            sums.pop("campaign_name") or "",
            sums,
            campaign_money.get(str(sums[campaign] or "")),
        )
        for sums in snapshots.values(campaign)
        .annotate(campaign_name=Max("coupon__campaign_links__campaign__name"), **SNAPSHOT_SUMS)
        .order_by(F("campaign_name").asc(nulls_last=True))
    ]
    return PerformanceReport(
        date_from=date_from,
        date_to=date_to,
        totals=_row("", "all", snapshots.aggregate(**SNAPSHOT_SUMS), _money_by(snapshots, None).get("")),
        by_coupon=by_coupon,
        by_campaign=by_campaign,
    )
