"""The console's dashboard: daily figures over a chosen range, from the summaries and payments."""

import json
from datetime import date, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from billing_project.tests.factories import UserFactory
from coupons.tests.factories import CouponAnalyticsSnapshotFactory
from credits.models import CreditUsageDailySummary, TokenUsageDailySummary
from payments.models import OperationKind, Payment
from subscriptions.models import PaymentStatus, PaymentTransaction, SubscriptionStatus
from subscriptions.tests.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"
DAY_ONE, DAY_TWO = date(2026, 3, 1), date(2026, 3, 2)


@pytest.fixture
def history():
    user = UserFactory()
    for day, credits, margin in ((DAY_ONE, 1200, "0.40"), (DAY_TWO, 300, "0.10")):
        CreditUsageDailySummary.objects.create(user=user, summary_date=day, total_deductions=credits)
        TokenUsageDailySummary.objects.create(user=user, summary_date=day, total_gross_margin=Decimal(margin))
    at_noon = timezone.make_aware(datetime(2026, 3, 2, 12))
    PaymentTransaction.objects.create(
        user=user, amount_usd=Decimal("19.00"), amount=1900, status=PaymentStatus.SUCCEEDED, completed_at=at_noon
    )
    PaymentTransaction.objects.create(
        user=user,
        amount_usd=Decimal("49.00"),
        amount=4900,
        refunded_amount_usd=Decimal("9.00"),
        refunded_amount=900,
        status=PaymentStatus.PARTIALLY_REFUNDED,
        completed_at=at_noon,
    )
    PaymentTransaction.objects.create(user=user, amount_usd=Decimal("99.00"), amount=9900, status=PaymentStatus.FAILED)
    CouponAnalyticsSnapshotFactory(snapshot_date=DAY_ONE, redemptions=3)
    SubscriptionFactory(tier="pro")
    SubscriptionFactory(tier="pro")
    SubscriptionFactory(tier="pro_max")
    SubscriptionFactory(tier="pro", status=SubscriptionStatus.CANCELLED)


def _chart_data(response) -> dict:
    content = response.content.decode()
    start = content.index('id="dashboard-data"')
    return json.loads(content[content.index(">", start) + 1 : content.index("</script>", start)])


def test_the_dashboard_shows_the_daily_figures_of_the_range(admin_client, history):
    response = admin_client.get(DASHBOARD, {"date_from": "2026-02-28", "date_to": "2026-03-02"})

    assert response.status_code == 200
    data = _chart_data(response)
    assert data["days"] == ["2026-02-28", "2026-03-01", "2026-03-02"]
    assert data["credits_used"] == [0, 1200, 300]
    assert data["revenue_usd"] == ["0.00", "0.00", "59.00"]
    assert [Decimal(value) for value in data["gross_margin_usd"]] == [0, Decimal("0.40"), Decimal("0.10")]
    assert data["coupon_redemptions"] == [0, 3, 0]
    assert data["active_subscriptions_by_tier"] == {"pro": 2, "pro_max": 1}
    totals = response.context["figures"].totals
    assert (totals["credits_used"], totals["revenue_usd"], totals["active_subscriptions"]) == (
        1500,
        Decimal("59.00"),
        3,
    )
    assert b"vendor/uplot/uPlot.iife.min.js" in response.content


def test_the_dashboard_defaults_to_the_last_thirty_days(admin_client):
    response = admin_client.get(DASHBOARD)

    days = _chart_data(response)["days"]
    assert len(days) == 30 and days[-1] == timezone.localdate().isoformat()


def test_a_reversed_or_too_long_range_is_refused_with_a_form_error(admin_client):
    reversed_range = admin_client.get(DASHBOARD, {"date_from": "2026-03-02", "date_to": "2026-03-01"})
    too_long = admin_client.get(DASHBOARD, {"date_from": "2024-01-01", "date_to": "2026-01-01"})

    for response in (reversed_range, too_long):
        assert response.status_code == 200
        assert response.context["figures"] is None
        assert b"Choose a range" in response.content


@pytest.mark.parametrize(("date_from", "date_to"), [("9999-12-30", "9999-12-31"), ("0001-01-01", "0001-01-02")])
def test_a_range_at_the_end_of_the_calendar_is_refused_with_a_form_error(admin_client, date_from, date_to):
    response = admin_client.get(DASHBOARD, {"date_from": date_from, "date_to": date_to})

    assert response.status_code == 200
    assert response.context["figures"] is None
    assert response.context["form"].errors


def test_the_admin_index_links_the_dashboard(admin_client):
    response = admin_client.get("/admin/")

    assert b'href="/admin/dashboard/"' in response.content


def test_the_dashboard_is_for_staff_only(client, django_user_model):
    customer = django_user_model.objects.create_user(username="c@example.com", email="c@example.com", password="x")
    client.force_login(customer)

    response = client.get(DASHBOARD)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_chart_library_is_served_from_the_projects_static_files():
    from django.contrib.staticfiles import finders

    assert finders.find("vendor/uplot/uPlot.iife.min.js")
    assert finders.find("billing/dashboard.js")


def test_revenue_is_grouped_by_currency_and_never_converted(admin_client, history):
    # given payments in euros, yen and dinars (three decimals) beside the dollars
    user = UserFactory()
    at_noon = timezone.make_aware(datetime(2026, 3, 1, 12))
    for amount, currency in ((1900, "eur"), (2900, "jpy"), (19005, "kwd"), (100, "kwd")):
        PaymentTransaction.objects.create(
            user=user,
            amount_usd=Decimal("0.00"),
            amount=amount,
            currency=currency,
            status=PaymentStatus.SUCCEEDED,
            completed_at=at_noon,
        )

    response = admin_client.get(DASHBOARD, {"date_from": "2026-03-01", "date_to": "2026-03-02"})

    data = _chart_data(response)
    assert data["revenue_by_currency"] == {
        "eur": ["19.00", "0.00"],
        "jpy": ["2900", "0"],
        "kwd": ["19.105", "0.000"],
        "usd": ["0.00", "59.00"],
    }
    assert data["revenue_usd"] == ["0.00", "59.00"]
    content = response.content.decode()
    assert '<td data-total="revenue_kwd">19.105</td>' in content
    assert '<td data-total="revenue_jpy">2900</td>' in content


def test_revenue_includes_license_sales_in_their_own_currency_net_of_refunds(admin_client, history):
    # given a license sold in dollars (partly refunded), an upgrade sold in yen, and a subscription payment
    user = UserFactory()
    day_one, day_two = (timezone.make_aware(datetime(2026, 3, day, 12)) for day in (1, 2))
    sales = (
        (OperationKind.LICENSE_CHECKOUT, 19900, 4900, "usd", day_one),
        (OperationKind.LICENSE_UPGRADE_CHECKOUT, 2900, 0, "jpy", day_two),
        (OperationKind.SUBSCRIPTION_CHECKOUT, 4900, 0, "usd", day_two),  # counted by its invoice payment
    )
    for kind, amount, refunded, currency, paid_at in sales:
        Payment.objects.create(
            user=user,
            kind=kind,
            provider="stripe",
            amount=amount,
            amount_refunded=refunded,
            currency=currency,
            paid_at=paid_at,
        )

    response = admin_client.get(DASHBOARD, {"date_from": "2026-03-01", "date_to": "2026-03-02"})

    data = _chart_data(response)
    assert data["revenue_by_currency"] == {"jpy": ["0", "2900"], "usd": ["150.00", "59.00"]}
    assert data["revenue_usd"] == ["150.00", "59.00"]
    assert '<td data-total="revenue_jpy">2900</td>' in response.content.decode()


def _charts(response) -> dict:
    return {chart["element"]: chart for chart in _chart_data(response)["charts"]}


def test_counts_are_drawn_from_zero_with_whole_number_ticks(admin_client, history):
    response = admin_client.get(DASHBOARD, {"date_from": "2026-03-01", "date_to": "2026-03-02"})

    charts = _charts(response)
    for element in ("chart-credits", "chart-coupons", "chart-tiers"):
        (axis,) = charts[element]["axes"].values()
        assert axis["begin_at_zero"] is True and axis["integer"] is True, element
    assert charts["chart-tiers"]["categories"] == ["pro", "pro_max"]
    assert charts["chart-tiers"]["series"][0]["values"] == [2, 1]


def test_gross_margin_has_its_own_axis_and_revenue_one_series_per_currency(admin_client, history):
    PaymentTransaction.objects.create(
        user=UserFactory(),
        amount_usd=Decimal("0.00"),
        amount=1900,
        currency="eur",
        status=PaymentStatus.SUCCEEDED,
        completed_at=timezone.make_aware(datetime(2026, 3, 1, 12)),
    )

    response = admin_client.get(DASHBOARD, {"date_from": "2026-03-01", "date_to": "2026-03-02"})

    money = _charts(response)["chart-money"]
    by_label = {series["label"]: series for series in money["series"]}
    assert by_label["Revenue (EUR)"]["values"] == ["19.00", "0.00"]
    assert by_label["Revenue (USD)"]["values"] == ["0.00", "59.00"]
    assert [Decimal(value) for value in by_label["Gross margin (USD)"]["values"]] == [Decimal("0.40"), Decimal("0.10")]
    axes = [series["axis"] for series in money["series"]]
    assert len(set(axes)) == len(axes) == 3
    assert set(axes) == set(money["axes"])
    assert money["axes"]["gross_margin_usd"]["begin_at_zero"] is True


def test_the_charts_take_the_full_width_of_the_page(admin_client, history):
    response = admin_client.get(DASHBOARD)

    assert b"grid-template-columns: 1fr;" in response.content
