"""Walks every API route of the URL configuration itself, so a route added later cannot forget its
permission: admin routes need the staff permission of what they touch (a table of expected answers
per role, below), service routes need a service token with their scope, and nothing else under
/api/v1/ answers without credentials unless it is listed as public here."""

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import URLPattern, URLResolver, get_resolver
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from billing_project.auth import OTP_CLAIM
from billing_project.service_tokens import service_token_issue
from conftest import access_token_for, bearer, role_grant

pytestmark = pytest.mark.django_db

API_PREFIX = "api/v1/"
ADMIN_PREFIX = "api/v1/admin/"
SERVICE_PREFIXES = ("api/v1/usage/",)
PUBLIC_ROUTES = {
    "api/v1/tiers/",
    "api/v1/auth/register/",
    "api/v1/auth/token/",
    "api/v1/auth/token/refresh/",
    "api/v1/auth/verify-email/",
    "api/v1/billing/webhooks/stripe/",
    "api/v1/billing/portal/offline/",
}
ALL_SCOPES = ["usage:write", "usage:read", "licenses:write", "admin"]
METHODS = ("get", "post", "put", "patch", "delete")


def _concrete_path(pattern: str) -> str:
    """A request path for a route pattern, with every parameter filled in."""
    path = re.sub(r"\(\?P<\w+>[^)]*\)", str(uuid.uuid4()), pattern)
    path = re.sub(r"<int:\w+>", "999999", path)
    path = re.sub(r"<(?:\w+:)?\w+>", str(uuid.uuid4()), path)
    return "/" + path.replace("^", "").replace("$", "").replace("\\", "")


def _walk(resolver: URLResolver, prefix: str = ""):
    for entry in resolver.url_patterns:
        pattern = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry, pattern)
        elif isinstance(entry, URLPattern):
            yield pattern, entry.callback


def _methods(callback) -> list[str]:
    actions = getattr(callback, "actions", None)
    if actions:
        return sorted(actions)
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    return [method for method in METHODS if view_class is not None and hasattr(view_class, method)]


def _requires_scope(callback) -> bool:
    view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    return any(hasattr(permission, "required_scope") for permission in getattr(view_class, "permission_classes", []))


def api_routes():
    routes = []
    for pattern, callback in _walk(get_resolver()):
        clean = pattern.replace("^", "").replace("$", "")
        if not clean.startswith(API_PREFIX) or ".(?P<format>" in pattern or "\\.(?P<format>" in pattern:
            continue
        for method in _methods(callback):
            routes.append(pytest.param(clean, _concrete_path(pattern), method, callback, id=f"{method} {clean}"))
    return routes


ROUTES = api_routes()
ADMIN_ROUTES = [route for route in ROUTES if route.values[0].startswith(ADMIN_PREFIX)]
SERVICE_ROUTES = [route for route in ROUTES if route.values[0].startswith(SERVICE_PREFIXES)]
PRIVATE_ROUTES = [route for route in ROUTES if route.values[0] not in PUBLIC_ROUTES]


def test_the_walk_sees_the_admin_routes():
    assert {"api/v1/admin/audit-logs/", "api/v1/admin/users/<int:user_id>/"} <= {r.values[0] for r in ADMIN_ROUTES}


# Who may call each staff route: the least role that may (roles nest: support < finance < admin,
# and a superuser may do everything). Staff without a role may call none.
UUID = "[0-9a-fA-F-]{36}"
SUPPORT, FINANCE, ADMIN = "support", "finance", "admin"
ROLE_ORDER = (SUPPORT, FINANCE, ADMIN)
STAFF_ROUTE_ROLES = {
    ("get", "api/v1/admin/users/<int:user_id>/"): ADMIN,
    ("delete", "api/v1/admin/users/<int:user_id>/"): ADMIN,
    ("get", "api/v1/admin/subscriptions/"): SUPPORT,
    ("get", f"api/v1/admin/subscriptions/(?P<pk>{UUID})/"): SUPPORT,
    ("post", f"api/v1/admin/subscriptions/(?P<pk>{UUID})/change-status/"): FINANCE,
    ("get", "api/v1/admin/licenses/"): SUPPORT,
    ("post", "api/v1/admin/licenses/"): FINANCE,
    ("get", f"api/v1/admin/licenses/(?P<pk>{UUID})/"): SUPPORT,
    ("post", f"api/v1/admin/licenses/(?P<pk>{UUID})/reactivate/"): SUPPORT,
    ("post", f"api/v1/admin/licenses/(?P<pk>{UUID})/revoke/"): SUPPORT,
    ("post", f"api/v1/admin/licenses/(?P<pk>{UUID})/suspend/"): SUPPORT,
    ("post", "api/v1/admin/credits/grant/"): FINANCE,
    ("get", "api/v1/admin/credits/auto-recharge/<int:user_id>/"): SUPPORT,
    ("put", "api/v1/admin/credits/auto-recharge/<int:user_id>/"): FINANCE,
    ("put", "api/v1/admin/credits/budget/<int:user_id>/"): FINANCE,
    ("get", "api/v1/admin/credits/deductions/"): SUPPORT,
    ("post", "api/v1/admin/credits/deductions/<uuid:deduction_id>/reverse/"): FINANCE,
    ("get", "api/v1/admin/credit-packs/"): SUPPORT,
    ("post", "api/v1/admin/credit-packs/"): FINANCE,
    ("get", "api/v1/admin/credit-packs/(?P<pk>[/.]+)/"): SUPPORT,
    ("patch", "api/v1/admin/credit-packs/(?P<pk>[/.]+)/"): FINANCE,
    ("put", "api/v1/admin/credit-packs/(?P<pk>[/.]+)/"): FINANCE,
    ("get", "api/v1/admin/providers/"): SUPPORT,
    ("post", "api/v1/admin/providers/"): FINANCE,
    ("get", "api/v1/admin/providers/(?P<pk>[/.]+)/"): SUPPORT,
    ("patch", "api/v1/admin/providers/(?P<pk>[/.]+)/"): FINANCE,
    ("put", "api/v1/admin/providers/(?P<pk>[/.]+)/"): FINANCE,
    ("get", "api/v1/admin/model-pricing/"): SUPPORT,
    ("post", "api/v1/admin/model-pricing/"): FINANCE,
    ("get", "api/v1/admin/model-pricing/(?P<pk>[/.]+)/"): SUPPORT,
    ("get", "api/v1/admin/pricing-configs/"): FINANCE,
    ("post", "api/v1/admin/pricing-configs/"): FINANCE,
    ("get", "api/v1/admin/pricing-configs/(?P<pk>[/.]+)/"): FINANCE,
    ("post", "api/v1/admin/pricing-configs/(?P<pk>[/.]+)/approve/"): FINANCE,
    ("post", "api/v1/admin/pricing-configs/(?P<pk>[/.]+)/reject/"): FINANCE,
    ("post", "api/v1/admin/pricing-configs/(?P<pk>[/.]+)/simulate/"): FINANCE,
    ("get", "api/v1/admin/analytics/coupon-performance/"): FINANCE,
    ("get", "api/v1/admin/coupons/"): SUPPORT,
    ("post", "api/v1/admin/coupons/"): FINANCE,
    ("delete", f"api/v1/admin/coupons/(?P<pk>{UUID})/"): FINANCE,
    ("get", f"api/v1/admin/coupons/(?P<pk>{UUID})/"): SUPPORT,
    ("patch", f"api/v1/admin/coupons/(?P<pk>{UUID})/"): FINANCE,
    ("put", f"api/v1/admin/coupons/(?P<pk>{UUID})/"): FINANCE,
    ("post", f"api/v1/admin/coupons/(?P<pk>{UUID})/activate/"): FINANCE,
    ("post", f"api/v1/admin/coupons/(?P<pk>{UUID})/deactivate/"): FINANCE,
    ("get", f"api/v1/admin/coupons/(?P<pk>{UUID})/redemptions/"): SUPPORT,
    ("get", "api/v1/admin/campaigns/"): SUPPORT,
    ("post", "api/v1/admin/campaigns/"): FINANCE,
    ("delete", f"api/v1/admin/campaigns/(?P<pk>{UUID})/"): FINANCE,
    ("get", f"api/v1/admin/campaigns/(?P<pk>{UUID})/"): SUPPORT,
    ("patch", f"api/v1/admin/campaigns/(?P<pk>{UUID})/"): FINANCE,
    ("put", f"api/v1/admin/campaigns/(?P<pk>{UUID})/"): FINANCE,
    ("delete", f"api/v1/admin/campaigns/(?P<pk>{UUID})/coupons/(?P<coupon_id>{UUID})/"): FINANCE,
    ("get", f"api/v1/admin/campaigns/(?P<pk>{UUID})/coupons/"): SUPPORT,
    ("post", f"api/v1/admin/campaigns/(?P<pk>{UUID})/coupons/"): FINANCE,
    ("post", f"api/v1/admin/campaigns/(?P<pk>{UUID})/generate-coupons/"): FINANCE,
    ("get", "api/v1/admin/fraud-detection/"): SUPPORT,
    ("get", f"api/v1/admin/fraud-detection/(?P<pk>{UUID})/"): SUPPORT,
    ("post", f"api/v1/admin/fraud-detection/(?P<pk>{UUID})/resolve/"): FINANCE,
    ("get", "api/v1/admin/audit-logs/"): ADMIN,
    ("get", "api/v1/admin/audit-logs/(?P<pk>[/.]+)/"): ADMIN,
    ("post", "api/v1/admin/audit-logs/seal/"): ADMIN,
    ("get", "api/v1/admin/payment-events/"): FINANCE,
    ("get", "api/v1/admin/payment-events/(?P<pk>[/.]+)/"): FINANCE,
    ("get", "api/v1/admin/payment-operations/"): SUPPORT,
    ("get", f"api/v1/admin/payment-operations/(?P<pk>{UUID})/"): SUPPORT,
    ("post", f"api/v1/admin/payment-operations/(?P<pk>{UUID})/reconcile/"): FINANCE,
    ("post", "api/v1/admin/payments/<uuid:payment_id>/refund/"): FINANCE,
    ("get", "api/v1/admin/payments/unmatched/"): FINANCE,
    ("get", "api/v1/admin/payments/unmatched/(?P<event_id>[A-Za-z0-9_-]+)/"): FINANCE,
    ("post", "api/v1/admin/payments/unmatched/(?P<event_id>[A-Za-z0-9_-]+)/reprocess/"): FINANCE,
    ("get", "api/v1/admin/webhook-endpoints/"): ADMIN,
    ("post", "api/v1/admin/webhook-endpoints/"): ADMIN,
    ("get", f"api/v1/admin/webhook-endpoints/(?P<pk>{UUID})/"): ADMIN,
    ("put", f"api/v1/admin/webhook-endpoints/(?P<pk>{UUID})/"): ADMIN,
    ("patch", f"api/v1/admin/webhook-endpoints/(?P<pk>{UUID})/"): ADMIN,
    ("delete", f"api/v1/admin/webhook-endpoints/(?P<pk>{UUID})/"): ADMIN,
    ("post", f"api/v1/admin/webhook-endpoints/(?P<pk>{UUID})/enable/"): ADMIN,
    ("get", f"api/v1/admin/webhook-endpoints/(?P<pk>{UUID})/deliveries/"): SUPPORT,
    ("post", f"api/v1/admin/webhook-endpoints/(?P<pk>{UUID})/deliveries/(?P<delivery_id>{UUID})/resend/"): ADMIN,
}
IDENTITIES = ("no permission", SUPPORT, FINANCE, ADMIN, "superuser")


def _may(identity: str, least_role: str) -> bool:
    if identity == "superuser":
        return True
    if identity not in ROLE_ORDER:
        return False
    return ROLE_ORDER.index(identity) >= ROLE_ORDER.index(least_role)


def staff_member(identity: str):
    """A staff member who is `identity`: in one of the roles, in none ("no permission"), or the superuser."""
    name = identity.replace(" ", "-")
    user = get_user_model().objects.create_user(
        username=f"{name}@example.com",
        email=f"{name}@example.com",
        password="correct horse battery",
        is_staff=True,
        is_superuser=identity == "superuser",
    )
    return role_grant(user, identity) if identity in ROLE_ORDER else user


@pytest.fixture
def staff_clients():
    """One API client per identity, each a staff member (the superuser too)."""
    clients = {}
    for identity in IDENTITIES:
        client = APIClient()
        client.credentials(**bearer(access_token_for(staff_member(identity))))
        clients[identity] = client
    return clients


def test_every_staff_route_has_an_expected_answer_per_role():
    assert {(route.values[2], route.values[0]) for route in ADMIN_ROUTES} == set(STAFF_ROUTE_ROLES)


@pytest.mark.parametrize(("pattern", "path", "method", "callback"), ADMIN_ROUTES)
def test_staff_route_answers_each_role_as_the_table_says(staff_clients, pattern, path, method, callback):
    least_role = STAFF_ROUTE_ROLES[(method, pattern)]
    answers = {identity: getattr(staff_clients[identity], method)(path, {}, format="json") for identity in IDENTITIES}

    refused = {identity for identity, answer in answers.items() if answer.status_code == 403}
    assert refused == {identity for identity in IDENTITIES if not _may(identity, least_role)}, pattern
    for identity in refused:
        assert answers[identity]["Content-Type"] == "application/problem+json"
        assert answers[identity].json()["code"] == "permission_denied"


def test_a_staff_token_without_a_second_factor_is_refused_when_staff_need_one(settings, staff_user, api_client):
    settings.STAFF_2FA_REQUIRED = True
    plain = RefreshToken.for_user(staff_user)
    verified = RefreshToken.for_user(staff_user)
    verified[OTP_CLAIM] = True

    refused = api_client.get("/api/v1/admin/audit-logs/", **bearer(str(plain.access_token)))
    admitted = api_client.get("/api/v1/admin/audit-logs/", **bearer(str(verified.access_token)))

    assert refused.status_code == 403
    assert "second factor" in refused.json()["detail"]
    assert admitted.status_code == 200


def test_a_staff_member_with_an_authenticator_needs_it_on_the_api_as_in_the_console(settings, staff_user, api_client):
    settings.STAFF_2FA_REQUIRED = False
    TOTPDevice.objects.create(user=staff_user, name="phone", confirmed=True)
    plain = RefreshToken.for_user(staff_user)

    refused = api_client.get("/api/v1/admin/audit-logs/", **bearer(str(plain.access_token)))

    assert refused.status_code == 403
    assert "second factor" in refused.json()["detail"]


@pytest.mark.parametrize(("pattern", "path", "method", "callback"), PRIVATE_ROUTES)
def test_private_route_without_credentials_is_401_problem(api_client, pattern, path, method, callback):
    response = getattr(api_client, method)(path, {}, format="json")

    assert response.status_code == 401, pattern
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(("pattern", "path", "method", "callback"), ADMIN_ROUTES)
def test_admin_route_refuses_a_plain_user_and_a_service(api_client, user, pattern, path, method, callback):
    as_user = getattr(api_client, method)(path, {}, format="json", **bearer(access_token_for(user)))
    service = service_token_issue(service="gateway", scopes=ALL_SCOPES, lifetime=timedelta(minutes=5)).token
    as_service = getattr(api_client, method)(path, {}, format="json", **bearer(service))

    assert as_user.status_code == 403, pattern
    assert as_service.status_code == 403, pattern


@pytest.mark.parametrize(("pattern", "path", "method", "callback"), SERVICE_ROUTES)
def test_service_route_refuses_users_staff_and_unscoped_services(
    api_client, user, staff_user, pattern, path, method, callback
):
    unscoped = service_token_issue(service="gateway", scopes=["nothing"], lifetime=timedelta(minutes=5)).token

    for token in (access_token_for(user), access_token_for(staff_user), unscoped):
        response = getattr(api_client, method)(path, {}, format="json", **bearer(token))
        assert response.status_code == 403, pattern


@pytest.mark.parametrize(("pattern", "path", "method", "callback"), ROUTES)
def test_scoped_routes_live_under_a_service_prefix(pattern, path, method, callback):
    assert _requires_scope(callback) == pattern.startswith(SERVICE_PREFIXES), pattern


@pytest.mark.urls("billing_project.tests.urls")
def test_service_scope_admits_the_scope_and_refuses_everything_else(api_client, user, service_token):
    path = "/api/v1/probe/service/"

    assert api_client.post(path).status_code == 401
    assert api_client.post(path, **bearer(access_token_for(user))).status_code == 403
    assert api_client.post(path, **bearer(service_token("usage:read"))).status_code == 403
    assert api_client.post(path, **bearer(service_token("usage:write"))).status_code == 201


@pytest.mark.urls("billing_project.tests.urls")
def test_expired_or_forged_service_token_is_401(api_client, service_token, settings):
    expired = service_token("usage:write", lifetime=timedelta(seconds=-1))
    good = service_token("usage:write")

    assert api_client.post("/api/v1/probe/service/", **bearer(expired)).json()["code"] == "token_expired"
    settings.SERVICE_JWT_SECRET = "another-secret-that-is-long-enough-to-sign-with"
    forged = api_client.post("/api/v1/probe/service/", **bearer(good))
    assert forged.status_code == 401
    assert forged.json()["code"] == "token_invalid"
