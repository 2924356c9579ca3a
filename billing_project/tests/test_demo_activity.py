"""`manage.py seed_demo_activity`: five weeks of demo customers, subscriptions, renewals, usage, coupons
and payments lived day by day through the services, with consistent ledgers and audit chain, once
only, and never against a real payment provider."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models.functions import TruncDate
from django.utils import timezone

from audit.models import AdminAuditLog, AuditAction
from coupons.models import CouponRedemption, RedemptionStatus
from credits.models import CreditAllocation, CreditUsageDailySummary, TokenUsageLedger
from subscriptions.models import (
    LIVE_STATUSES,
    BillingInvoice,
    DunningAttempt,
    DunningResult,
    InvoiceStatus,
    PaymentStatus,
    PaymentTransaction,
    Subscription,
    SubscriptionStatus,
)

pytestmark = pytest.mark.django_db

DEMO = "@demo.example.com"
PAID = (PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED)


def _seed(*args) -> str:
    out = StringIO()
    call_command("seed_demo_activity", *args, stdout=out)
    return out.getvalue()


def _days(queryset, field: str) -> set:
    return set(queryset.annotate(day=TruncDate(field)).values_list("day", flat=True))


def _row_counts() -> dict:
    return {
        model.__name__: model.objects.count()
        for model in (
            get_user_model(),
            Subscription,
            PaymentTransaction,
            TokenUsageLedger,
            CouponRedemption,
            CreditAllocation,
            CreditUsageDailySummary,
        )
    }


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser(username="admin@example.com", email="admin@example.com")


def test_the_demo_activity_lives_five_weeks_through_the_services_and_the_dashboard_draws_them(
    settings, staff, admin_client
):
    settings.DEBUG = True

    report = _seed()
    now = timezone.now()

    customers = get_user_model().objects.filter(email__endswith=DEMO)
    assert 20 <= customers.count() <= 40
    assert f"Created {customers.count()} demo customers" in report
    live = Subscription.objects.filter(user__in=customers, status__in=LIVE_STATUSES)
    assert {"free", "pro", "pro_max", "enterprise_pro", "enterprise_max"} <= set(live.values_list("tier", flat=True))
    assert live.filter(status=SubscriptionStatus.TRIAL).exists()
    payments = PaymentTransaction.objects.filter(user__in=customers)
    assert payments.filter(status=PaymentStatus.SUCCEEDED).count() >= 10
    assert payments.filter(status=PaymentStatus.PARTIALLY_REFUNDED).count() == 1
    redemptions = CouponRedemption.objects.filter(user__in=customers, status=RedemptionStatus.SUCCESS)
    assert redemptions.filter(coupon__code="BONUS5K").exists() and redemptions.filter(coupon__code="WELCOME20").exists()
    assert f"{redemptions.count()} coupon redemptions" in report
    assert AdminAuditLog.objects.filter(action=AuditAction.GRANT, actor=staff).exists()
    usage = TokenUsageLedger.objects.filter(user__in=customers)
    assert usage.count() > 100
    assert len({started.date() for started in usage.values_list("request_started_at", flat=True)}) >= 14
    assert "over 35 days" in report
    # Customers sign up over the weeks, and use the product on every day since the first.
    assert len(_days(customers, "date_joined")) >= 10
    assert len(_days(usage, "created_at")) >= 30
    assert not usage.filter(created_at__gt=now).exists()
    assert min(customers.values_list("date_joined", flat=True)).date() == timezone.localdate() - timedelta(days=35)
    # Trials converted, lapsed and still running; one paid customer cancels at the end of the period.
    subscriptions = Subscription.objects.filter(user__in=customers)
    assert subscriptions.filter(status=SubscriptionStatus.EXPIRED, trial_ends_at__isnull=False).count() == 2
    assert subscriptions.filter(status=SubscriptionStatus.TRIAL).count() == 2
    assert subscriptions.filter(cancel_at_period_end=True, status=SubscriptionStatus.ACTIVE).count() == 1
    # Payments on many days; monthly renewals, one declined first and paid by the next night's retry.
    assert len(_days(payments.filter(status__in=PAID), "completed_at")) >= 8
    renewals = BillingInvoice.objects.filter(user__in=customers, description="Renewal", status=InvoiceStatus.PAID)
    assert renewals.count() == 2
    assert "2 paid renewals (1 declined first and paid by a dunning retry)" in report
    retry = DunningAttempt.objects.get(user__in=customers, result=DunningResult.SUCCEEDED)
    assert retry.attempted_at - retry.invoice.created_at == timedelta(days=1)
    assert retry.subscription.status == SubscriptionStatus.ACTIVE
    assert retry.subscription.current_period_start == retry.invoice.period_start
    assert len(_days(redemptions, "created_at")) >= 5

    ledger = StringIO()
    call_command("verify_ledger", "--no-progress", stdout=ledger, stderr=ledger)
    assert f"Ledger consistent for {customers.count()} users" in ledger.getvalue()
    chain = StringIO()
    call_command("verify_audit_chain", stdout=chain, stderr=chain)
    assert "Audit chain intact" in chain.getvalue()

    page = admin_client.get("/admin/dashboard/").content.decode()
    start = page.index('id="dashboard-data"')
    data = json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])
    assert sum(data["active_subscriptions_by_tier"].values()) == live.count()
    # The default 30 days, drawn from the nightly rollups and snapshots, are full of activity.
    assert sum(1 for used in data["credits_used"][:-1] if used) == len(data["days"]) - 1  # today: so far
    assert sum(1 for revenue in data["revenue_by_currency"]["usd"] if float(revenue)) >= 8
    assert sum(1 for redeemed in data["coupon_redemptions"] if redeemed) >= 5


def test_a_second_run_adds_nothing_and_says_so(settings, staff):
    settings.DEBUG = False
    _seed("--force")
    before = _row_counts()

    report = _seed("--force")

    assert report.strip() == "The demo customers exist already: nothing to do."
    assert _row_counts() == before


def test_it_refuses_to_run_with_debug_off_unless_forced(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="--force"):
        _seed()

    assert not get_user_model().objects.filter(email__endswith=DEMO).exists()


def test_it_refuses_to_charge_a_real_payment_provider(settings):
    settings.DEBUG = True
    settings.PAYMENTS_PROVIDER = "stripe"

    with pytest.raises(CommandError, match="offline payment provider"):
        _seed()

    assert not get_user_model().objects.filter(email__endswith=DEMO).exists()


def test_a_run_that_fails_midway_leaves_nothing_so_the_next_run_starts_again(settings, staff, monkeypatch):
    settings.DEBUG = True
    call_command("seed_catalog", stdout=StringIO())  # as scripts/dev runs it first
    before = _row_counts()

    def provider_down(**kwargs):
        raise RuntimeError("the refund failed")

    monkeypatch.setattr("billing_project.demo_activity.payment_refund", provider_down)
    with pytest.raises(RuntimeError):
        _seed()

    assert _row_counts() == before
    monkeypatch.undo()
    assert "Created 30 demo customers" in _seed()
