"""Daily analytics snapshots per coupon, which the performance report sums."""

from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.utils import timezone

from coupons.models import CouponAnalyticsSnapshot, CouponRedemption, RedemptionStatus
from subscriptions.models import PaymentStatus, PaymentTransaction


@transaction.atomic
def coupon_analytics_snapshot(*, day: date) -> int:
    """Rebuilds each coupon's figures for `day` (idempotent: run it again and the rows are the
    same). Conversions: the day's redeemers who have paid since their redemption. Money is kept per
    currency of the redemptions (`money_by_currency`), never converted; the `_usd` figures are the
    USD redemptions'."""
    start = timezone.make_aware(datetime.combine(day, datetime.min.time()))
    end = start + timedelta(days=1)
    of_day = CouponRedemption.objects.filter(redemption_date__gte=start, redemption_date__lt=end, coupon__isnull=False)
    succeeded = Q(status=RedemptionStatus.SUCCESS)
    paid_since = PaymentTransaction.objects.filter(
        user_id=OuterRef("user_id"), status=PaymentStatus.SUCCEEDED, completed_at__gte=OuterRef("redemption_date")
    )
    figures = (
        of_day.alias(converted=Exists(paid_since))
        .values("coupon_id")
        .annotate(
            redemptions=Count("pk", filter=succeeded),
            failed=Count("pk", filter=Q(status=RedemptionStatus.FAILED)),
            users=Count("user", filter=succeeded, distinct=True),
            converted_users=Count("user", filter=succeeded & Q(converted=True), distinct=True),
        )
    )
    money: dict = {}
    for row in (
        of_day.filter(succeeded)
        .values("coupon_id", "currency")
        .annotate(discount=Sum("discount_applied_usd"), revenue=Sum("final_amount_usd"))
        .order_by("currency")
    ):
        money.setdefault(row["coupon_id"], {})[row["currency"]] = {
            "discount_total": str(row["discount"] or Decimal("0.00")),
            "revenue": str(row["revenue"] or Decimal("0.00")),
        }
    seen = []
    for row in figures:
        by_currency = money.get(row["coupon_id"], {})
        usd = by_currency.get("usd", {})
        CouponAnalyticsSnapshot.objects.update_or_create(
            coupon_id=row["coupon_id"],
            snapshot_date=day,
            defaults={
                "redemptions": row["redemptions"],
                "failed_redemptions": row["failed"],
                "unique_users": row["users"],
                "discount_total_usd": Decimal(usd.get("discount_total", "0.00")),
                "revenue_usd": Decimal(usd.get("revenue", "0.00")),
                "money_by_currency": by_currency,
                "conversions": row["converted_users"],
            },
        )
        seen.append(row["coupon_id"])
    CouponAnalyticsSnapshot.objects.filter(snapshot_date=day).exclude(coupon_id__in=seen).delete()
    return len(seen)
