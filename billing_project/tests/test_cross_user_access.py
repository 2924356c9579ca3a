"""One customer can never read or change another's balance, licenses, invoices, usage or
subscription. Every customer route that names a resource (in its path or its body) is tried by an
intruder against the owner's resource, and the walk fails when a new such route is not listed here.
Also: staff can read every admin list."""

import pytest
from rest_framework.test import APIClient

from billing_project.tests.test_authorization_walk import (
    ADMIN_ROUTES,
    PUBLIC_ROUTES,
    ROUTES,
    SERVICE_PREFIXES,
)
from conftest import access_token_for, bearer
from credits.models import UserCreditBalance
from credits.tests.factories import CreditUsageDailySummaryFactory, TokenUsageLedgerFactory
from licensing.tests.factories import LicenseActivationFactory, PerpetualLicenseFactory
from subscriptions.models import Subscription, SubscriptionStatus
from subscriptions.services import account_register, tier_catalog_seed
from subscriptions.tests.factories import BillingInvoiceFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
# Customer routes naming a resource, in the path or in the body (license keys travel in bodies).
ROUTES_NAMING_A_RESOURCE = {
    ("post", "api/v1/subscriptions/<uuid:subscription_id>/change-tier/preview/"),
    ("post", "api/v1/subscriptions/<uuid:subscription_id>/change-tier/"),
    ("post", "api/v1/subscriptions/<uuid:subscription_id>/cancel/"),
    ("get", "api/v1/licenses/<str:license_key>/eligibility/"),
    ("post", "api/v1/licenses/activate/"),
    ("post", "api/v1/licenses/deactivate/"),
    ("post", "api/v1/licenses/validate/"),
    ("post", "api/v1/licenses/upgrade/"),
}
# Customer routes that name nothing: they act on the caller alone.
CALLERS_OWN_ROUTES = {
    ("get", "api/v1/me/"),
    ("post", "api/v1/subscriptions/"),
    ("get", "api/v1/me/subscription/"),
    ("get", "api/v1/me/entitlements/"),
    ("get", "api/v1/me/invoices/"),
    ("get", "api/v1/me/credits/"),
    ("get", "api/v1/me/credits/budget/"),
    ("put", "api/v1/me/credits/budget/"),
    ("get", "api/v1/me/credits/auto-recharge/"),
    ("put", "api/v1/me/credits/auto-recharge/"),
    ("get", "api/v1/credits/packs/"),
    ("post", "api/v1/credits/purchase/"),
    ("get", "api/v1/me/usage/"),
    ("get", "api/v1/me/usage/daily/"),
    ("get", "api/v1/me/licenses/"),
    ("post", "api/v1/licenses/purchase/"),
    ("post", "api/v1/coupons/validate/"),
    ("post", "api/v1/coupons/redeem/"),
    ("post", "api/v1/auth/verify-email/resend/"),
    ("post", "api/v1/billing/portal/"),
}


def _client(user) -> APIClient:
    client = APIClient()
    client.credentials(**bearer(access_token_for(user)))
    return client


@pytest.fixture
def owner_and_intruder():
    tier_catalog_seed()
    owner = account_register(email="owner@example.com", password=PASSWORD)
    intruder = account_register(email="intruder@example.com", password=PASSWORD)
    Subscription.objects.filter(user=owner).delete()
    subscription = SubscriptionFactory(user=owner, stripe_customer_id=None, stripe_subscription_id=None)
    license_ = PerpetualLicenseFactory(user=owner)
    LicenseActivationFactory(license=license_, device_fingerprint="owner-laptop")
    BillingInvoiceFactory(user=owner, subscription=subscription)
    TokenUsageLedgerFactory(user=owner)
    CreditUsageDailySummaryFactory(user=owner)
    return owner, intruder, subscription, license_


def test_every_customer_route_is_classified_as_naming_a_resource_or_acting_on_the_caller():
    customer_routes = {
        (route.values[2], route.values[0])
        for route in ROUTES
        if route.values[0] not in PUBLIC_ROUTES
        and not route.values[0].startswith(SERVICE_PREFIXES)
        and route not in ADMIN_ROUTES
    }

    assert customer_routes == ROUTES_NAMING_A_RESOURCE | CALLERS_OWN_ROUTES


def test_an_intruder_cannot_reach_the_owners_subscription(owner_and_intruder):
    owner, intruder, subscription, _ = owner_and_intruder
    client = _client(intruder)
    base = f"/api/v1/subscriptions/{subscription.pk}"

    answers = [
        client.post(f"{base}/change-tier/preview/", {"tier": "pro_max"}, format="json"),
        client.post(f"{base}/change-tier/", {"tier": "pro_max"}, format="json"),
        client.post(f"{base}/cancel/", {}, format="json"),
    ]

    assert [answer.status_code for answer in answers] == [404, 404, 404]
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.status, subscription.cancel_at_period_end) == (
        "pro",
        SubscriptionStatus.ACTIVE,
        False,
    )


def test_an_intruder_cannot_use_or_read_the_owners_license(owner_and_intruder):
    _, intruder, _, license_ = owner_and_intruder
    client = _client(intruder)
    key = license_.license_key

    eligibility = client.get(f"/api/v1/licenses/{key}/eligibility/", {"version": "1.0.0"})
    activate = client.post(
        "/api/v1/licenses/activate/", {"license_key": key, "device_fingerprint": "intruder-pc"}, format="json"
    )
    deactivate = client.post(
        "/api/v1/licenses/deactivate/", {"license_key": key, "device_fingerprint": "owner-laptop"}, format="json"
    )
    validate = client.post(
        "/api/v1/licenses/validate/",
        {"license_key": key, "device_fingerprint": "owner-laptop", "app_version": "1.0.0"},
        format="json",
    )
    upgrade = client.post("/api/v1/licenses/upgrade/", {"license_key": key}, format="json")

    assert [eligibility.status_code, activate.status_code, deactivate.status_code, upgrade.status_code] == [
        404,
        404,
        404,
        404,
    ]
    assert validate.json() == {"valid": False, "reason": "unknown_key"}
    assert list(license_.activations.values_list("device_fingerprint", "deactivated_at")) == [("owner-laptop", None)]


def test_the_callers_own_routes_show_only_the_callers_data(owner_and_intruder):
    owner, intruder, _, _ = owner_and_intruder
    client = _client(intruder)

    credits = client.get("/api/v1/me/credits/").json()
    usage = client.get("/api/v1/me/usage/").json()
    daily = client.get("/api/v1/me/usage/daily/").json()
    licenses = client.get("/api/v1/me/licenses/").json()
    invoices = client.get("/api/v1/me/invoices/").json()
    subscription = client.get("/api/v1/me/subscription/").json()

    assert credits["balance"] == UserCreditBalance.objects.get(user=intruder).amount
    assert usage["results"] == [] and daily == []
    assert licenses["results"] == [] and invoices["results"] == []
    assert subscription["tier"] == "free"


def test_staff_can_read_every_admin_list(staff_client):
    lists = sorted(
        {route.values[1] for route in ADMIN_ROUTES if route.values[2] == "get" and "(?P<" not in route.values[0]}
        # One user's page, not a list: an unknown user is a 404.
        - {"/api/v1/admin/users/999999/", "/api/v1/admin/credits/auto-recharge/999999/"}
    )

    answers = {path: staff_client.get(path).status_code for path in lists if "analytics" not in path}
    performance = staff_client.get(
        "/api/v1/admin/analytics/coupon-performance/", {"date_from": "2026-01-01", "date_to": "2026-01-31"}
    )

    assert answers == dict.fromkeys(answers, 200)
    assert performance.status_code == 200
