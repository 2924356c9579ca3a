"""Who is calling: users and staff (simplejwt access tokens signed with JWT_SECRET) and services
(tokens signed with SERVICE_JWT_SECRET carrying a service name, scopes and an expiry).

No credentials -> 401; a valid caller of the wrong kind, or a user who is not staff -> 403.
"""

import uuid
from dataclasses import dataclass
from datetime import timedelta

import jwt
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.models import TokenUser
from rest_framework_simplejwt.tokens import AccessToken

from billing_project.metrics import SERVICE_AUTH_ATTEMPTS

SERVICE_TOKEN_TYPE = "service"
SERVICE_TOKEN_ALGORITHM = "HS256"
AUTH_HEADER = 'Bearer realm="api"'


@dataclass(frozen=True)
class ServicePrincipal:
    """The `request.user` of a service call. Never staff, never a database user."""

    name: str
    scopes: frozenset[str]

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    def __str__(self):
        return f"service:{self.name}"


def service_token_issue(*, service: str, scopes: list[str], lifetime: timedelta) -> str:
    now = timezone.now()
    payload = {
        "token_type": SERVICE_TOKEN_TYPE,
        "sub": f"service:{service}",
        "service": service,
        "scopes": sorted(set(scopes)),
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, settings.SERVICE_JWT_SECRET, algorithm=SERVICE_TOKEN_ALGORITHM)


def service_token_decode(raw: str) -> ServicePrincipal:
    claims = jwt.decode(
        raw,
        settings.SERVICE_JWT_SECRET,
        algorithms=[SERVICE_TOKEN_ALGORITHM],
        options={"require": ["exp", "service", "scopes", "token_type"]},
    )
    if claims["token_type"] != SERVICE_TOKEN_TYPE:
        raise jwt.InvalidTokenError("not a service token")
    return ServicePrincipal(name=claims["service"], scopes=frozenset(claims["scopes"]))


def bearer_token(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _is_service_token(raw: str) -> bool:
    try:
        unverified = jwt.decode(raw, options={"verify_signature": False})
    except jwt.PyJWTError:
        return False
    return unverified.get("token_type") == SERVICE_TOKEN_TYPE


class ServiceTokenAuthentication(authentication.BaseAuthentication):
    """Authenticates service tokens; leaves every other bearer token to the user authenticator."""

    def authenticate(self, request):
        raw = bearer_token(request)
        if raw is None or not _is_service_token(raw):
            return None
        try:
            principal = service_token_decode(raw)
        except jwt.ExpiredSignatureError as error:
            SERVICE_AUTH_ATTEMPTS.labels(result="expired").inc()
            raise exceptions.AuthenticationFailed("The service token has expired.", code="token_expired") from error
        except jwt.PyJWTError as error:
            SERVICE_AUTH_ATTEMPTS.labels(result="invalid").inc()
            raise exceptions.AuthenticationFailed("The service token is invalid.", code="token_invalid") from error
        SERVICE_AUTH_ATTEMPTS.labels(result="success").inc()
        return principal, raw

    def authenticate_header(self, request):
        return AUTH_HEADER


class NoAuthentication(authentication.BaseAuthentication):
    """For public endpoints (login, register): authenticates nobody, but failures there still
    answer 401 with a WWW-Authenticate header rather than 403."""

    def authenticate(self, request):
        return None

    def authenticate_header(self, request):
        return AUTH_HEADER


class UserTokenAuthentication(JWTAuthentication):
    def authenticate_header(self, request):
        return AUTH_HEADER


# A safety net only: saving or deleting the user drops the entry when the change commits.
ACTIVE_USER_CACHE_SECONDS = 60


def _active_user_key(user_id) -> str:
    return f"auth:active-user:{user_id}"


class ActiveUserTokenAuthentication(UserTokenAuthentication):
    """For frequent reads that need only the caller's id (`me/credits/`): `request.user` is the token's
    user (simplejwt's TokenUser), with no user query once the user is known to exist and be active.
    That is cached for a minute and dropped when the user row is saved or deleted; a change made
    without save() (a queryset update) takes effect within the minute."""

    def get_user(self, validated_token):
        user_id = validated_token.get(settings.SIMPLE_JWT["USER_ID_CLAIM"])
        key = _active_user_key(user_id)
        if user_id is None or not cache.get(key):
            super().get_user(validated_token)  # raises for a missing or inactive user
            cache.set(key, True, timeout=ACTIVE_USER_CACHE_SECONDS)
        return TokenUser(validated_token)


def user_changed(sender, instance, **kwargs):
    """post_save and post_delete of the user model: forget that the user was known to be active."""
    key = _active_user_key(instance.pk)
    transaction.on_commit(lambda: cache.delete(key))


def caller_identity(request) -> str | None:
    """A stable, verified name for the caller of a raw Django request ("user:<id>" or
    "service:<name>"), or None when the credentials are missing or invalid. Used to scope
    idempotency keys before DRF authenticates the request; checks signatures, not the database."""
    raw = bearer_token(request)
    if raw is None:
        return None
    if _is_service_token(raw):
        try:
            return str(service_token_decode(raw))
        except jwt.PyJWTError:
            return None
    try:
        token = AccessToken(raw)
    except TokenError:
        return None
    return f"user:{token[settings.SIMPLE_JWT['USER_ID_CLAIM']]}"


def is_user(principal) -> bool:
    return bool(principal and principal.is_authenticated and not isinstance(principal, ServicePrincipal))


class IsUser(permissions.BasePermission):
    """A signed-in person (staff included); services are refused."""

    def has_permission(self, request, view):
        return is_user(request.user)


class IsStaff(permissions.BasePermission):
    def has_permission(self, request, view):
        return is_user(request.user) and request.user.is_active and request.user.is_staff


def service_scope(scope: str) -> type[permissions.BasePermission]:
    """A permission class admitting only service tokens that carry `scope`."""

    class HasServiceScope(permissions.BasePermission):
        required_scope = scope
        message = f"A service token with scope '{scope}' is required."

        def has_permission(self, request, view):
            principal = request.user
            return isinstance(principal, ServicePrincipal) and scope in principal.scopes

    HasServiceScope.__name__ = f"HasServiceScope[{scope}]"
    return HasServiceScope
