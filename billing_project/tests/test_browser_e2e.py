"""The admin console in a real browser (headless Chromium driven by Playwright): sign in, open the
dashboard and see its charts drawn, find a user, grant them credits through the console action, and
find the audit row; find a customer from the index's search box, read their page, grant them
credits from it and open their subscription's history; enrol an authenticator, keep the recovery
codes and sign in with one; see the demo activity drawn on the dashboard.
Screenshots go to test-artifacts/browser/. Skips where Chromium is missing; `.ci/run` installs
Debian's chromium so CI always runs it."""

import json
import shutil
from datetime import date, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AdminAuditLog, AuditAction
from credits.models import CreditUsageDailySummary, UserCreditBalance
from subscriptions.services import account_register, tier_catalog_seed

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "browser"
PASSWORD = "correct horse battery staple"
# Chromium on a closed network: no background connections, no first-run or sync traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install chromium (.ci/run installs it)"),
]


@pytest.fixture
def browser_page(monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (requirements-dev.txt)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test stay synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(15_000)
        yield page
        browser.close()
        # With Playwright's event loop running in this thread, Django keeps the test's connections in
        # a context of their own (asgiref's thread-critical Local): closed here, or they outlive the
        # test and hold the test database open.
        connections.close_all()


def test_staff_sign_in_see_the_dashboard_grant_credits_and_find_the_audit_row(
    browser_page, live_server, django_user_model
):
    page = browser_page
    tier_catalog_seed()
    django_user_model.objects.create_superuser(
        username="admin@example.com", email="admin@example.com", password=PASSWORD
    )
    customer = account_register(email="jane.customer@example.com", password=PASSWORD)
    today = date.today()
    CreditUsageDailySummary.objects.create(user=customer, summary_date=today, total_deductions=1234)
    balance_before = UserCreditBalance.objects.get(user=customer).amount

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "admin@example.com")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#dashboard-link")
    page.screenshot(path=ARTIFACTS / "1-admin-index.png", full_page=True)

    page.click("#dashboard-link a >> nth=0")
    page.wait_for_selector("body[data-charts-rendered=true]")
    assert page.locator(".dashboard-chart canvas").count() == 4
    assert page.locator("[data-total=credits_used]").inner_text() == "1234"
    page.screenshot(path=ARTIFACTS / "2-dashboard.png", full_page=True)

    page.goto(f"{live_server.url}/admin/auth/user/?q=jane.customer")
    row = page.locator("#result_list tbody tr", has_text="jane.customer@example.com")
    assert row.count() == 1
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "grant_credits")
    page.click("button[name=index]")
    page.fill("#id_amount", "2500")
    page.fill("#id_reason", "Goodwill for the outage")
    page.screenshot(path=ARTIFACTS / "3-grant-form.png", full_page=True)
    page.click("input[name=apply]")
    page.wait_for_selector(".messagelist .success")
    page.screenshot(path=ARTIFACTS / "4-granted.png", full_page=True)
    assert UserCreditBalance.objects.get(user=customer).amount == balance_before + 2500

    page.goto(f"{live_server.url}/admin/audit/adminauditlog/?action__exact=grant")
    audit_rows = page.locator("#result_list tbody tr")
    assert audit_rows.count() == 1
    assert "admin@example.com" in audit_rows.first.inner_text()
    page.screenshot(path=ARTIFACTS / "5-audit-row.png", full_page=True)
    grant = AdminAuditLog.objects.get(action=AuditAction.GRANT)
    assert grant.new_value["amount"] == 2500 and grant.new_value["user_id"] == customer.pk


def test_staff_find_a_customer_read_their_page_grant_credits_and_open_a_history(
    browser_page, live_server, django_user_model
):
    page = browser_page
    tier_catalog_seed()
    django_user_model.objects.create_superuser(
        username="admin@example.com", email="admin@example.com", password=PASSWORD
    )
    customer = account_register(email="sam.customer@example.com", password=PASSWORD)
    balance_before = UserCreditBalance.objects.get(user=customer).amount

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "admin@example.com")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.fill("#customer-search-box input[name=q]", "sam.customer")
    page.click("#customer-search-box input[type=submit]")
    page.wait_for_selector("#customer-profile")
    assert page.locator("#customer-tier").inner_text() == "free"
    assert page.locator("#customer-balance").inner_text() == str(balance_before)
    page.screenshot(path=ARTIFACTS / "8-customer-page.png", full_page=True)

    page.fill("#grant-form #id_amount", "1500")
    assert page.locator("#grant-form .datetimeshortcuts").count() == 2  # the date and time widgets
    page.fill("#grant-form #id_expires_at_0", f"{date.today() + timedelta(days=30):%Y-%m-%d}")
    page.fill("#grant-form #id_expires_at_1", "12:00:00")
    page.fill("#grant-form #id_reason", "Sorry for the outage")
    page.click("#grant-submit")
    page.wait_for_selector(".messagelist .success")
    page.screenshot(path=ARTIFACTS / "9-customer-granted.png", full_page=True)

    assert page.locator("#customer-balance").inner_text() == str(balance_before + 1500)
    assert "Sorry for the outage" in page.locator("#customer-audit").inner_text()
    assert UserCreditBalance.objects.get(user=customer).amount == balance_before + 1500
    grant = AdminAuditLog.objects.get(action=AuditAction.GRANT)
    assert grant.new_value["user_id"] == customer.pk and grant.new_value["expires_at"]

    page.click("#customer-subscription a >> nth=0")  # the subscription's own page
    page.click("a.historylink")
    page.wait_for_selector("#unified-history")
    history = page.locator("#unified-history tbody").inner_text()
    assert "row create" in history and "status: None -> active" in history
    page.screenshot(path=ARTIFACTS / "10-subscription-history.png", full_page=True)


def test_staff_enrol_an_authenticator_in_the_browser_and_then_sign_in_with_it(
    browser_page, live_server, django_user_model, settings
):
    page = browser_page
    settings.STAFF_2FA_REQUIRED = True
    staff = django_user_model.objects.create_superuser(
        username="ops@example.com", email="ops@example.com", password=PASSWORD
    )

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "ops@example.com")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#qr-code svg")
    page.screenshot(path=ARTIFACTS / "6-enrol-authenticator.png", full_page=True)
    device = TOTPDevice.objects.get(user=staff, confirmed=False)
    page.fill("#id_otp_token", _totp(device))
    page.click("#second-factor-form input[type=submit]")
    page.wait_for_selector("#recovery-codes")
    assert page.locator("#recovery-codes li").count() == settings.STAFF_RECOVERY_CODES
    page.screenshot(path=ARTIFACTS / "7-recovery-codes.png", full_page=True)
    page.goto(f"{live_server.url}/admin/")
    page.wait_for_selector("#dashboard-link")

    page.context.clear_cookies()  # a new browser session
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "ops@example.com")
    page.fill("#id_password", PASSWORD)
    page.fill("#id_otp_token", _recovery_code(staff))
    page.click("input[type=submit]")
    page.wait_for_selector("#dashboard-link")
    assert AdminAuditLog.objects.filter(action=AuditAction.LOGIN, new_value__second_factor=True).count() == 1


def _totp(device) -> str:
    return f"{TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token():06d}"


def _recovery_code(user) -> str:
    return StaticToken.objects.filter(device__user=user).values_list("token", flat=True).first()


def test_staff_see_the_demo_activity_drawn_on_the_dashboard(browser_page, live_server, django_user_model):
    page = browser_page
    django_user_model.objects.create_superuser(
        username="admin@example.com", email="admin@example.com", password=PASSWORD
    )
    call_command("seed_demo_activity", "--force", stdout=StringIO())

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "admin@example.com")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.click("#dashboard-link a >> nth=0")
    page.wait_for_selector("body[data-charts-rendered=true]")

    assert page.locator(".dashboard-chart canvas").count() == 4
    assert int(page.locator("[data-total=credits_used]").inner_text()) > 0
    assert Decimal(page.locator("[data-total=revenue_usd]").inner_text()) > 0
    assert int(page.locator("[data-total=coupon_redemptions]").inner_text()) > 0
    chart_width = page.locator("#chart-credits").bounding_box()["width"]
    assert chart_width > page.locator("#content").bounding_box()["width"] * 0.9  # full width
    # Weeks of activity: credits used every day, payments and redemptions on many days.
    drawn = json.loads(page.locator("#dashboard-data").text_content())
    assert all(drawn["credits_used"][:-1]), drawn["credits_used"]  # today's, so far, may still be 0
    assert sum(1 for revenue in drawn["revenue_by_currency"]["usd"] if Decimal(revenue)) >= 8
    assert sum(1 for redeemed in drawn["coupon_redemptions"] if redeemed) >= 5
    # The cursor on the last point (today, or the last tier): each chart's legend shows the value drawn there.
    for chart in ("#chart-credits", "#chart-money", "#chart-coupons", "#chart-tiers"):
        over = page.locator(f"{chart} .u-over")
        box = over.bounding_box()
        over.hover(position={"x": box["width"] - 1, "y": box["height"] / 2})
        value = page.locator(f"{chart} .u-legend .u-series >> nth=1").locator(".u-value").inner_text()
        assert Decimal(value.replace(",", "")) >= 0, (chart, value)
    page.mouse.move(0, 0)
    page.screenshot(path=ARTIFACTS / "11-dashboard-demo-activity.png", full_page=True)
