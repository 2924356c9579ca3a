"""`manage.py seed_demo_activity`: demo customers, subscriptions, usage, coupons and payments made
through the services, with consistent ledgers, once only, and never against a real payment provider."""

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AdminAuditLog, AuditAction
from coupons.models import CouponRedemption, RedemptionStatus
from credits.models import CreditAllocation, CreditUsageDailySummary, TokenUsageLedger
from subscriptions.models import PaymentStatus, PaymentTransaction, Subscription, SubscriptionStatus

pytestmark = pytest.mark.django_db

DEMO = "@demo.example.com"


def _seed(*args) -> str:
    out = StringIO()
    call_command("seed_demo_activity", *args, stdout=out)
    return out.getvalue()


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


def test_the_demo_activity_fills_every_ledger_consistently_and_the_dashboard_shows_it(settings, staff, admin_client):
    settings.DEBUG = True

    report = _seed()

    customers = get_user_model().objects.filter(email__endswith=DEMO)
    assert 20 <= customers.count() <= 40
    assert f"Created {customers.count()} demo customers" in report
    live = Subscription.objects.filter(user__in=customers).exclude(status=SubscriptionStatus.CANCELLED)
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

    ledger = StringIO()
    call_command("verify_ledger", "--no-progress", stdout=ledger, stderr=ledger)
    assert f"Ledger consistent for {customers.count()} users" in ledger.getvalue()

    page = admin_client.get("/admin/dashboard/").content.decode()
    start = page.index('id="dashboard-data"')
    data = json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])
    assert sum(data["credits_used"]) > 0
    assert sum(float(value) for value in data["revenue_by_currency"]["usd"]) > 0
    assert sum(data["coupon_redemptions"]) > 0
    assert sum(data["active_subscriptions_by_tier"].values()) == live.count()


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
