"""Who is calling: users and staff (simplejwt access tokens signed with JWT_SECRET) and services
(tokens signed with SERVICE_JWT_SECRET carrying an id, a service name, scopes and an expiry).

No credentials -> 401; a valid caller of the wrong kind, or staff without the permission the
route needs -> 403. A service token is accepted only while its record (billing_project.service_tokens)
is live, checked on every call through the cache.
"""

import hashlib
import time
from dataclasses import dataclass

import jwt
from django.conf import settings
from django.core.cache import cache, caches
from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone
from django_otp import user_has_device
from rest_framework import authentication, exceptions, permissions
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.models import TokenUser
from rest_framework_simplejwt.tokens import AccessToken

from billing_project.codes import ErrorCode
from billing_project.metrics import SERVICE_AUTH_ATTEMPTS
from billing_project.models import ServiceToken

SERVICE_TOKEN_TYPE = "service"
SERVICE_TOKEN_ALGORITHM = "HS256"
AUTH_HEADER = 'Bearer realm="api"'
# A user token obtained with a second factor carries this claim (auth/token/ with `otp`).
OTP_CLAIM = "otp"


@dataclass(frozen=True)
class ServicePrincipal:
    """The `request.user` of a service call. Never staff, never a database user."""

    name: str
    scopes: frozenset[str]
    token_id: str = ""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    def __str__(self):
        return f"service:{self.name}"


def signing_key_id(secret: str) -> str:
    """The `kid` of a service signing key: a digest that names the key without revealing it."""
    return hashlib.sha256(f"service-jwt-key:{secret}".encode()).hexdigest()[:16]


def service_signing_keys() -> dict[str, str]:
    """kid -> secret of every key that verifies service tokens: the current one signs, the previous
    one (during a rotation) still verifies."""
    keys = {signing_key_id(settings.SERVICE_JWT_SECRET): settings.SERVICE_JWT_SECRET}
    if settings.SERVICE_JWT_PREVIOUS_SECRET:
        keys[signing_key_id(settings.SERVICE_JWT_PREVIOUS_SECRET)] = settings.SERVICE_JWT_PREVIOUS_SECRET
    return keys


def service_token_encode(*, token_id: str, service: str, scopes: list[str], issued_at, expires_at) -> str:
    """Signs a service token with the current key, named in the `kid` header."""
    payload = {
        "token_type": SERVICE_TOKEN_TYPE,
        "sub": f"service:{service}",
        "service": service,
        "scopes": sorted(set(scopes)),
        "iat": int(issued_at.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": token_id,
    }
    secret = settings.SERVICE_JWT_SECRET
    return jwt.encode(payload, secret, algorithm=SERVICE_TOKEN_ALGORITHM, headers={"kid": signing_key_id(secret)})


def service_token_decode(raw: str) -> ServicePrincipal:
    """Checks the signature (with the key its `kid` names) and the claims; not whether the token
    was revoked. A token without a `kid` or an id predates token records and is refused."""
    return _service_token_claims(raw)[0]


def _service_token_claims(raw: str) -> tuple[ServicePrincipal, float]:
    """service_token_decode's principal, and when the token expires (a Unix time)."""
    secret = service_signing_keys().get(jwt.get_unverified_header(raw).get("kid"))
    if secret is None:
        raise jwt.InvalidTokenError("unknown signing key")
    claims = jwt.decode(
        raw,
        secret,
        algorithms=[SERVICE_TOKEN_ALGORITHM],
        options={"require": ["exp", "jti", "service", "scopes", "token_type"]},
    )
    if claims["token_type"] != SERVICE_TOKEN_TYPE:
        raise jwt.InvalidTokenError("not a service token")
    principal = ServicePrincipal(name=claims["service"], scopes=frozenset(claims["scopes"]), token_id=claims["jti"])
    return principal, float(claims["exp"])


# Tokens this worker has verified, by their exact text (their signature included), with what they
# proved: a client sends the same token on every call until it expires, and decoding and verifying it
# again (three times for a service token: its kind, its key, its claims) was a tenth of a small
# request's time. The expiry is checked on
# every use, the revocation of a service token and the state of a user as before; a signing key is
# removed by a restart, which forgets the tokens it verified.
VERIFIED_TOKENS_MAX = 4096
_verified_tokens: dict[str, tuple[float, ServicePrincipal | AccessToken]] = {}


def _verified(raw: str) -> ServicePrincipal | AccessToken | None:
    """What this worker proved about the token, while it has not expired."""
    known = _verified_tokens.get(raw)
    if known is None or known[0] <= time.time():
        return None
    return known[1]


def _remember(raw: str, expires_at: float, proved: ServicePrincipal | AccessToken) -> None:
    if len(_verified_tokens) >= VERIFIED_TOKENS_MAX:
        _verified_tokens.clear()
    _verified_tokens[raw] = (expires_at, proved)


SIGNING_SETTINGS = frozenset({"SERVICE_JWT_SECRET", "SERVICE_JWT_PREVIOUS_SECRET", "SIMPLE_JWT", "JWT_SECRET"})


@receiver(setting_changed)
def _signing_keys_changed(setting, **kwargs):
    """A changed signing key (a test's override; in production a restart) forgets what the old ones proved."""
    if setting in SIGNING_SETTINGS:
        _verified_tokens.clear()


# How long the workers trust what one of them read about a token. A revocation overwrites the entry
# when it commits, so every worker sees it at once; only a revocation made while Redis was
# unreachable can take this long to reach the workers.
SERVICE_TOKEN_CACHE_SECONDS = 300
SERVICE_TOKEN_TOUCH_SECONDS = 60


def service_token_cache_key(token_id: str) -> str:
    return f"auth:service-token:{token_id}"


def service_token_check(*, token_id: str) -> bool:
    """True while the token's record exists, is not revoked and has not expired; also records its
    last use, at most once a minute (not a write on every call). One cache round trip per call, none
    while this worker remembers the answer (PROCESS_CACHE_SECONDS)."""
    key, used_key = service_token_cache_key(token_id), f"{service_token_cache_key(token_id)}:used"
    remembered = caches["process"].get(key)
    if remembered is not None:
        return remembered > timezone.now().timestamp()
    cached = cache.get_many([key, used_key])
    live_until = cached.get(key)
    if live_until is None:
        record = ServiceToken.objects.filter(pk=token_id).values("revoked_at", "expires_at").first()
        live_until = 0 if record is None or record["revoked_at"] else record["expires_at"].timestamp()
        # add, not set: a revocation written meanwhile must not be overwritten by this older read.
        cache.add(key, live_until, timeout=SERVICE_TOKEN_CACHE_SECONDS)
    caches["process"].set(key, live_until)
    live = live_until > timezone.now().timestamp()
    if live and used_key not in cached and cache.add(used_key, 1, timeout=SERVICE_TOKEN_TOUCH_SECONDS):
        ServiceToken.objects.filter(pk=token_id).update(last_used_at=timezone.now())
    return live


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
        if raw is None:
            return None
        principal = _verified(raw)
        if isinstance(principal, AccessToken):
            return None
        if principal is None:
            principal = self._decoded(raw)
            if principal is None:
                return None
        if not service_token_check(token_id=principal.token_id):
            SERVICE_AUTH_ATTEMPTS.labels(result="revoked").inc()
            raise exceptions.AuthenticationFailed(
                "The service token was revoked or is unknown; ask for a new one.", code=ErrorCode.TOKEN_REVOKED
            )
        SERVICE_AUTH_ATTEMPTS.labels(result="success").inc()
        return principal, raw

    @staticmethod
    def _decoded(raw: str) -> ServicePrincipal | None:
        if not _is_service_token(raw):
            return None
        try:
            principal, expires_at = _service_token_claims(raw)
        except jwt.ExpiredSignatureError as error:
            SERVICE_AUTH_ATTEMPTS.labels(result="expired").inc()
            raise exceptions.AuthenticationFailed(
                "The service token has expired.", code=ErrorCode.TOKEN_EXPIRED
            ) from error
        except jwt.PyJWTError as error:
            SERVICE_AUTH_ATTEMPTS.labels(result="invalid").inc()
            raise exceptions.AuthenticationFailed(
                "The service token is invalid.", code=ErrorCode.TOKEN_INVALID
            ) from error
        _remember(raw, expires_at, principal)
        return principal

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
    """A person's access token. Its user tells, as django-otp tells of a console session's, whether
    the sign-in used a second factor (`is_verified()`): the token's `otp` claim."""

    def authenticate(self, request):
        authenticated = super().authenticate(request)
        if authenticated is not None:
            user, token = authenticated
            verified = bool(token.get(OTP_CLAIM))
            user.is_verified = lambda: verified
        return authenticated

    def get_validated_token(self, raw_token):
        raw = raw_token.decode() if isinstance(raw_token, bytes) else raw_token
        token = _verified(raw)
        if isinstance(token, AccessToken):
            return token
        token = super().get_validated_token(raw_token)
        _remember(raw, float(token["exp"]), token)
        return token

    def authenticate_header(self, request):
        return AUTH_HEADER


# A safety net only: saving or deleting the user drops the entry when the change commits.
ACTIVE_USER_CACHE_SECONDS = 60


def _active_user_key(user_id) -> str:
    return f"auth:active-user:{user_id}"


class ActiveUserTokenAuthentication(UserTokenAuthentication):
    """For frequent reads that need only the caller's id (`me/credits/`): `request.user` is the token's
    user (simplejwt's TokenUser), with no user query once the user is known to exist and be active.
    That is cached for a minute and dropped when the user row is saved or deleted (other workers
    remember it for PROCESS_CACHE_SECONDS more); a change made without save() (a queryset update)
    takes effect within the minute."""

    def get_user(self, validated_token):
        user_id = validated_token.get(settings.SIMPLE_JWT["USER_ID_CLAIM"])
        key = _active_user_key(user_id)
        if user_id is None or not (caches["process"].get(key) or cache.get(key)):
            super().get_user(validated_token)  # raises for a missing or inactive user
            cache.set(key, True, timeout=ACTIVE_USER_CACHE_SECONDS)
        caches["process"].set(key, True)
        return TokenUser(validated_token)


def user_changed(sender, instance, **kwargs):
    """post_save and post_delete of the user model: forget that the user was known to be active."""
    key = _active_user_key(instance.pk)

    def forgotten():
        cache.delete(key)
        caches["process"].delete(key)

    transaction.on_commit(forgotten)


def user_caller(user_id) -> str:
    """The caller name of a user, as idempotency keys are scoped by it."""
    return f"user:{user_id}"


def caller_identity(request) -> str | None:
    """A stable, verified name for the caller of a raw Django request ("user:<id>" or
    "service:<name>"), or None when the credentials are missing or invalid. Used to scope
    idempotency keys before DRF authenticates the request; checks signatures, not the database."""
    raw = bearer_token(request)
    if raw is None:
        return None
    token = _verified(raw)
    if isinstance(token, ServicePrincipal):
        return str(token)
    if token is None and _is_service_token(raw):
        try:
            return str(service_token_decode(raw))
        except jwt.PyJWTError:
            return None
    try:
        token = token or AccessToken(raw)
    except TokenError:
        return None
    return user_caller(token[settings.SIMPLE_JWT["USER_ID_CLAIM"]])


def is_user(principal) -> bool:
    return bool(principal and principal.is_authenticated and not isinstance(principal, ServicePrincipal))


class IsUser(permissions.BasePermission):
    """A signed-in person (staff included); services are refused."""

    def has_permission(self, request, view):
        return is_user(request.user)


def staff_second_factor_required(user) -> bool:
    """Staff sign in with a second factor where STAFF_2FA_REQUIRED asks it, and always once they
    have enrolled one."""
    return bool(user.is_staff and (settings.STAFF_2FA_REQUIRED or user_has_device(user)))


def staff_second_factor_satisfied(user) -> bool:
    """Whether this sign-in (console session or API token) used the second factor its user needs.
    A user object that does not say (a command's, a task's) counts as not verified."""
    is_verified = getattr(user, "is_verified", None)
    return bool(is_verified and is_verified()) or not staff_second_factor_required(user)


def acts_as_staff(user, *, permissions: tuple[str, ...]) -> bool:
    """Staff powers inside a service (acting on another customer's objects): an active staff member
    holding `permissions`, signed in with the second factor staff need; the same rule as the staff
    routes. Otherwise the caller is a customer there."""
    return bool(
        is_user(user)
        and user.is_active
        and user.is_staff
        and staff_second_factor_satisfied(user)
        and user.has_perms(permissions)
    )


def staff_permissions_required(request, view) -> tuple[str, ...] | None:
    """What the view's `staff_permissions` table asks for this request: the entry of the viewset
    action (or, for a plain view, of the HTTP method); an entry may itself be a table by method."""
    table = getattr(view, "staff_permissions", None) or {}
    method = "get" if request.method == "HEAD" else request.method.lower()
    required = table.get(getattr(view, "action", None) or method)
    if isinstance(required, dict):
        required = required.get(method)
    return tuple(required) if required is not None else None


def _routed(request, view) -> bool:
    if hasattr(view, "action_map"):
        return view.action is not None
    return request.method == "HEAD" or hasattr(view, request.method.lower())


class HasStaffPermission(permissions.BasePermission):
    """Staff routes: an active staff member holding every permission the view's `staff_permissions`
    names for this action. `is_staff` alone grants nothing, and an action the table does not name
    is refused. Where staff need a second factor, only a token obtained with one is accepted."""

    def has_permission(self, request, view):
        user = request.user
        if not (is_user(user) and user.is_active and user.is_staff):
            return False
        if not staff_second_factor_satisfied(user):
            self.message = "Staff tokens need a second factor: sign in again with your authenticator code."
            return False
        if not _routed(request, view):
            return True  # a method the view does not serve: DRF answers 405
        required = staff_permissions_required(request, view)
        if required is None or not user.has_perms(required):
            self.message = f"This needs the permission(s): {', '.join(required or ('(none defined)',))}."
            return False
        return True


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
