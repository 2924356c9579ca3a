"""Staff lists of coupons, campaigns, redemptions and fraud detections, and the performance report."""

from dataclasses import dataclass
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
    key: str
    name: str
    redemptions: int
    failed_redemptions: int
    unique_users: int
    discount_total_usd: Decimal
    revenue_usd: Decimal
    conversions: int

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
    "discount_total_usd": Sum("discount_total_usd"),
    "revenue_usd": Sum("revenue_usd"),
    "conversions": Sum("conversions"),
}


def _row(key: str, name: str, sums: dict) -> PerformanceRow:
    return PerformanceRow(
        key=key,
        name=name,
        redemptions=sums["redemptions"] or 0,
        failed_redemptions=sums["failed_redemptions"] or 0,
        unique_users=sums["unique_users"] or 0,
        discount_total_usd=sums["discount_total_usd"] or Decimal("0.00"),
        revenue_usd=sums["revenue_usd"] or Decimal("0.00"),
        conversions=sums["conversions"] or 0,
    )


def coupon_performance(*, date_from: date, date_to: date, campaign_id=None, coupon_id=None) -> PerformanceReport:
    """Redemptions, discount given, revenue after discount and conversions to paid, by coupon and
    by campaign, summed from the daily snapshots (`snapshot_coupon_analytics`) of the range.
    Unique users are summed per day: a user redeeming on two days counts twice."""
    snapshots = CouponAnalyticsSnapshot.objects.filter(snapshot_date__gte=date_from, snapshot_date__lte=date_to)
    if coupon_id is not None:
        snapshots = snapshots.filter(coupon_id=coupon_id)
    if campaign_id is not None:
        snapshots = snapshots.filter(coupon__campaign_links__campaign_id=campaign_id)
    by_coupon = [
        _row(str(sums.pop("coupon_id")), sums.pop("coupon__code"), sums)
        for sums in snapshots.values("coupon_id", "coupon__code").annotate(**SNAPSHOT_SUMS).order_by("coupon__code")
    ]
    by_campaign = [
        _row(str(sums.pop("coupon__campaign_links__campaign_id") or ""), sums.pop("campaign_name") or "", sums)
        for sums in snapshots.values("coupon__campaign_links__campaign_id")
        .annotate(campaign_name=Max("coupon__campaign_links__campaign__name"), **SNAPSHOT_SUMS)
        .order_by(F("campaign_name").asc(nulls_last=True))
    ]
    return PerformanceReport(
        date_from=date_from,
        date_to=date_to,
        totals=_row("", "all", snapshots.aggregate(**SNAPSHOT_SUMS)),
        by_coupon=by_coupon,
        by_campaign=by_campaign,
    )
