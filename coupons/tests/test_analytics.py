"""The daily coupon analytics snapshot: the management command over a range of days and the Celery
task for yesterday. Both rebuild the same rows when run again."""

from datetime import date, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing_project.tests.factories import UserFactory
from coupons import tasks
from coupons.models import CouponAnalyticsSnapshot, RedemptionStatus
from coupons.tests.factories import CouponAnalyticsSnapshotFactory, CouponFactory, CouponRedemptionFactory
from subscriptions.models import PaymentStatus
from subscriptions.tests.factories import PaymentTransactionFactory

pytestmark = pytest.mark.django_db

DAY = date(2024, 5, 14)
FIGURES = (
    "redemptions",
    "failed_redemptions",
    "unique_users",
    "discount_total_usd",
    "revenue_usd",
    "conversions",
)


def at(day: date, hour: int, minute: int = 0):
    return timezone.make_aware(datetime.combine(day, datetime.min.time()) + timedelta(hours=hour, minutes=minute))


def snapshot_rows() -> dict:
    return {
        (row.coupon.code, row.snapshot_date): tuple(getattr(row, name) for name in FIGURES)
        for row in CouponAnalyticsSnapshot.objects.select_related("coupon")
    }


def run(*args) -> str:
    out = StringIO()
    call_command("snapshot_coupon_analytics", *args, "--no-progress", stdout=out)
    return out.getvalue()


def failed(coupon, user, when):
    return CouponRedemptionFactory(
        coupon=coupon,
        user=user,
        redemption_date=when,
        status=RedemptionStatus.FAILED,
        failure_reason="coupon_user_limit_reached",
        use_number=None,
        user_use_number=None,
        discount_applied_usd=Decimal("0.00"),
        final_amount_usd=Decimal("0.00"),
    )


@pytest.fixture
def day_of_redemptions():
    """On DAY: WELCOME is redeemed twice by Ann (two uses) and once by Bob, and refused once for Cal;
    CREDITS once by Bob. Ann pays after her redemptions; Bob paid before his and fails after;
    Cal pays (but his redemption failed). Outside DAY: one redemption the day before, one the day
    after, and a pending checkout on DAY that does not count."""
    welcome = CouponFactory(code="WELCOME", max_uses_per_user=2)
    credits = CouponFactory(code="CREDITS")
    quiet = CouponFactory(code="QUIET")
    ann = CouponRedemptionFactory(
        coupon=welcome,
        redemption_date=at(DAY, 0, 0),
        discount_applied_usd=Decimal("3.80"),
        final_amount_usd=Decimal("15.20"),
    ).user
    CouponRedemptionFactory(
        coupon=welcome,
        user=ann,
        user_use_number=2,
        redemption_date=at(DAY, 23, 59),
        discount_applied_usd=Decimal("7.60"),
        final_amount_usd=Decimal("30.40"),
    )
    bob = CouponRedemptionFactory(
        coupon=welcome,
        redemption_date=at(DAY, 12),
        discount_applied_usd=Decimal("1.00"),
        final_amount_usd=Decimal("9.00"),
    ).user
    cal = failed(welcome, UserFactory(), at(DAY, 13)).user
    CouponRedemptionFactory(
        coupon=credits,
        user=bob,
        redemption_date=at(DAY, 14),
        discount_applied_usd=Decimal("0.00"),
        final_amount_usd=Decimal("0.00"),
        credits_granted=500,
    )
    CouponRedemptionFactory(coupon=welcome, redemption_date=at(DAY - timedelta(days=1), 23, 59))
    CouponRedemptionFactory(coupon=quiet, redemption_date=at(DAY + timedelta(days=1), 0, 0))
    CouponRedemptionFactory(coupon=quiet, redemption_date=at(DAY, 9), status=RedemptionStatus.PENDING)
    PaymentTransactionFactory(user=ann, completed_at=at(DAY + timedelta(days=2), 9))
    PaymentTransactionFactory(user=bob, completed_at=at(DAY, 1))
    PaymentTransactionFactory(user=bob, invoice=None, status=PaymentStatus.FAILED, completed_at=at(DAY, 20))
    PaymentTransactionFactory(user=cal, completed_at=at(DAY, 20))
    return {"welcome": welcome, "credits": credits, "quiet": quiet}


EXPECTED_DAY = {
    ("WELCOME", DAY): (3, 1, 2, Decimal("12.40"), Decimal("54.60"), 1),
    ("CREDITS", DAY): (1, 0, 1, Decimal("0.00"), Decimal("0.00"), 0),
    ("QUIET", DAY): (0, 0, 0, Decimal("0.00"), Decimal("0.00"), 0),
}


def test_snapshot_command_writes_one_row_per_coupon_redeemed_that_day(day_of_redemptions):
    output = run("--from", "2024-05-14", "--to", "2024-05-14")

    assert snapshot_rows() == EXPECTED_DAY
    assert "Wrote 3 coupon snapshot rows for 2024-05-14 to 2024-05-14." in output


def test_snapshot_command_is_idempotent(day_of_redemptions):
    run("--from", "2024-05-14", "--to", "2024-05-14")
    first_ids = set(CouponAnalyticsSnapshot.objects.values_list("pk", flat=True))

    run("--from", "2024-05-14", "--to", "2024-05-14")

    assert snapshot_rows() == EXPECTED_DAY
    assert set(CouponAnalyticsSnapshot.objects.values_list("pk", flat=True)) == first_ids


def test_snapshot_command_rebuilds_stale_rows_and_removes_rows_of_coupons_no_longer_redeemed(day_of_redemptions):
    CouponAnalyticsSnapshotFactory(coupon=day_of_redemptions["welcome"], snapshot_date=DAY, redemptions=99)
    CouponAnalyticsSnapshotFactory(coupon=CouponFactory(code="STALE"), snapshot_date=DAY)
    CouponAnalyticsSnapshotFactory(coupon=CouponFactory(code="OTHER-DAY"), snapshot_date=date(2024, 1, 1))

    run("--from", "2024-05-14")

    assert snapshot_rows() == {
        **EXPECTED_DAY,
        ("OTHER-DAY", date(2024, 1, 1)): (3, 0, 3, Decimal("11.40"), Decimal("45.60"), 2),
    }


def test_snapshot_command_covers_every_day_of_the_range(day_of_redemptions):
    output = run("--from", "2024-05-13", "--to", "2024-05-15")

    rows = snapshot_rows()
    assert rows[("WELCOME", date(2024, 5, 13))] == (1, 0, 1, Decimal("3.80"), Decimal("15.20"), 0)
    assert rows[("QUIET", date(2024, 5, 15))] == (1, 0, 1, Decimal("3.80"), Decimal("15.20"), 0)
    assert {key: value for key, value in rows.items() if key[1] == DAY} == EXPECTED_DAY
    assert len(rows) == 5
    assert "Wrote 5 coupon snapshot rows for 2024-05-13 to 2024-05-15." in output


def test_snapshot_command_dry_run_writes_nothing(day_of_redemptions):
    existing = CouponAnalyticsSnapshotFactory(coupon=day_of_redemptions["welcome"], snapshot_date=DAY, redemptions=99)

    output = run("--from", "2024-05-14", "--to", "2024-05-14", "--dry-run")

    assert list(CouponAnalyticsSnapshot.objects.values_list("pk", "redemptions")) == [(existing.pk, 99)]
    assert "Would write 3 coupon snapshot rows" in output


@pytest.mark.parametrize(
    "args",
    [
        ("--from", "2024-05-15", "--to", "2024-05-14"),
        ("--from", "yesterday"),
        ("--from", "2024-05-14", "--to", "x"),
        ("--from", "2024-02-30"),
    ],
    ids=["from-after-to", "not-a-date", "to-not-a-date", "impossible-date"],
)
def test_snapshot_command_with_a_bad_date_range_is_a_command_error(day_of_redemptions, args):
    with pytest.raises(CommandError):
        run(*args)

    assert not CouponAnalyticsSnapshot.objects.exists()


def test_snapshot_command_defaults_to_yesterday():
    yesterday = timezone.localdate() - timedelta(days=1)
    CouponRedemptionFactory(coupon=CouponFactory(code="YDAY"), redemption_date=at(yesterday, 12))

    output = run()

    assert snapshot_rows() == {("YDAY", yesterday): (1, 0, 1, Decimal("3.80"), Decimal("15.20"), 0)}
    assert f"for {yesterday} to {yesterday}" in output


def test_snapshot_task_snapshots_yesterday_only():
    today = timezone.localdate()
    yesterday = today - timedelta(days=1)
    CouponRedemptionFactory(coupon=CouponFactory(code="YDAY"), redemption_date=at(yesterday, 12))
    CouponRedemptionFactory(coupon=CouponFactory(code="TODAY"), redemption_date=timezone.now())

    written = tasks.snapshot_coupon_analytics()

    assert written == 1
    assert snapshot_rows() == {("YDAY", yesterday): (1, 0, 1, Decimal("3.80"), Decimal("15.20"), 0)}


def test_snapshot_task_through_delay_is_idempotent():
    yesterday = timezone.localdate() - timedelta(days=1)
    CouponRedemptionFactory(coupon=CouponFactory(code="YDAY"), redemption_date=at(yesterday, 12))

    tasks.snapshot_coupon_analytics.delay()
    tasks.snapshot_coupon_analytics.delay()

    assert snapshot_rows() == {("YDAY", yesterday): (1, 0, 1, Decimal("3.80"), Decimal("15.20"), 0)}
