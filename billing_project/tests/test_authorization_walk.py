"""Walks every API route of the URL configuration itself, so a route added later cannot forget its
permission: admin routes are staff-only, service routes need a service token with their scope,
and nothing else under /api/v1/ answers without credentials unless it is listed as public here."""

import re
import uuid
from datetime import timedelta

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from billing_project.auth import service_token_issue
from conftest import access_token_for, bearer

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
}
ALL_SCOPES = ["usage:write", "usage:read", "licenses:write", "admin"]
METHODS = ("get", "post", "put", "patch", "delete")


def _concrete_path(pattern: str) -> str:
    """A request path for a route pattern, with every parameter filled in."""
    path = re.sub(r"\(\?P<\w+>[^)]*\)", str(uuid.uuid4()), pattern)
    path = re.sub(r"<int:\w+>", "1", path)
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


@pytest.mark.parametrize(("pattern", "path", "method", "callback"), PRIVATE_ROUTES)
def test_private_route_without_credentials_is_401_problem(api_client, pattern, path, method, callback):
    response = getattr(api_client, method)(path, {}, format="json")

    assert response.status_code == 401, pattern
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(("pattern", "path", "method", "callback"), ADMIN_ROUTES)
def test_admin_route_refuses_a_plain_user_and_a_service(api_client, user, pattern, path, method, callback):
    as_user = getattr(api_client, method)(path, {}, format="json", **bearer(access_token_for(user)))
    service = service_token_issue(service="gateway", scopes=ALL_SCOPES, lifetime=timedelta(minutes=5))
    as_service = getattr(api_client, method)(path, {}, format="json", **bearer(service))

    assert as_user.status_code == 403, pattern
    assert as_service.status_code == 403, pattern


@pytest.mark.parametrize(("pattern", "path", "method", "callback"), SERVICE_ROUTES)
def test_service_route_refuses_users_staff_and_unscoped_services(
    api_client, user, staff_user, pattern, path, method, callback
):
    unscoped = service_token_issue(service="gateway", scopes=["nothing"], lifetime=timedelta(minutes=5))

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
