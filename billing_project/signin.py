"""Signing in, for the console and for `auth/token/`: who may, how often, with which second factor,
and the trail every attempt leaves.

- Passwords are checked by `EmailBackend` behind django-axes, which counts failures per account and
  per client IP and refuses every attempt on a locked-out account or address for a while.
- Staff need a second factor (a TOTP code, or one of their recovery codes) when
  STAFF_2FA_REQUIRED says so, and always once they have enrolled an authenticator.
- Every failure and lockout, and every staff sign-in, writes an audit row and a log line.
"""

import logging
from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.db.models import Q
from django.shortcuts import render
from django.utils import timezone
from django_otp import match_token, user_has_device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from audit.models import AuditAction
from audit.services import audit_record
from billing_project.auth import staff_second_factor_required
from billing_project.codes import ErrorCode
from billing_project.errors import Forbidden, TooManyRequests, Unauthenticated
from billing_project.models import StaffSession
from billing_project.net import client_ip

logger = logging.getLogger(__name__)

CONSOLE_PREFIX = "/admin/"
AUTHENTICATOR_NAME = "authenticator"
RECOVERY_DEVICE_NAME = "recovery codes"


class EmailBackend(ModelBackend):
    """Signs in by e-mail (case-insensitive) or username. Unknown, inactive and active accounts
    cost the same: one password hash each, so the answer's timing tells nothing about the account."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None or password is None:
            return None
        user = account_for(username)
        if user is None:
            get_user_model()().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None


def account_for(identifier: str):
    """The account a sign-in names: the one with this username, else the oldest with this e-mail."""
    users = list(
        get_user_model()
        ._default_manager.filter(Q(username=identifier) | Q(email__iexact=identifier))
        .order_by("date_joined")[:5]
    )
    return next((user for user in users if user.get_username() == identifier), users[0] if users else None)


def attempted_username(request, credentials=None) -> str:
    """What django-axes counts failures against: the name as typed, trimmed and lower-cased."""
    source = credentials if credentials else getattr(request, "POST", {})
    return str(source.get("username") or "").strip().lower()[:254]


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' answer to a locked-out attempt: the API has answered its own 429 problem; the
    console shows its lockout page."""
    if not request.path.startswith(CONSOLE_PREFIX) and original_response is not None:
        return original_response
    context = {"title": "Sign-in locked", "minutes": settings.LOGIN_LOCKOUT_MINUTES}
    return render(request, "admin/lockout.html", context, status=429)


@dataclass(frozen=True)
class SignIn:
    user: object
    second_factor: bool


def user_sign_in(*, request, email: str, password: str, otp: str = "") -> SignIn:
    """The account these credentials open, for a token. `request` is the Django request (django-axes
    keeps its counts and lockout flag on it)."""
    user = authenticate(request, username=email, password=password)
    if user is None:
        _refuse_if_locked_out(request)
        raise Unauthenticated("Invalid e-mail or password.", code=ErrorCode.INVALID_CREDENTIALS)
    second_factor = False
    if staff_second_factor_required(user):
        if not user_has_device(user):
            raise Forbidden(
                "Staff accounts need a second factor: enrol an authenticator in the console first.",
                code=ErrorCode.OTP_SETUP_REQUIRED,
            )
        if not otp:
            raise Unauthenticated(
                "Send the code of your authenticator app (or a recovery code) as `otp`.", code=ErrorCode.OTP_REQUIRED
            )
        if match_token(user, otp) is None:
            sign_in_failed(request=request, username=email, reason="otp_invalid")
            _refuse_if_locked_out(request)
            raise Unauthenticated("The authenticator code is wrong or was already used.", code=ErrorCode.OTP_INVALID)
        second_factor = True
    sign_in_succeeded(request=request, user=user, second_factor=second_factor)
    return SignIn(user=user, second_factor=second_factor)


def _refuse_if_locked_out(request) -> None:
    if getattr(request, "axes_locked_out", False):
        minutes = settings.LOGIN_LOCKOUT_MINUTES
        raise TooManyRequests(
            f"Too many failed sign-ins for this account or address: try again in {minutes} minutes.",
            code=ErrorCode.LOGIN_LOCKED_OUT,
            extra={"retry_after": minutes * 60},
        )


def sign_in_failed(*, request, username: str, reason: str) -> None:
    """A failure after the password (a wrong second factor, a console refusal): counted by
    django-axes like a wrong password, and audited through the same signal."""
    user_login_failed.send(sender=__name__, credentials={"username": username}, request=request, reason=reason)


def sign_in_succeeded(*, request, user, second_factor: bool) -> None:
    """Audits a staff sign-in and logs every sign-in. Console sign-ins arrive here through the
    `user_logged_in` signal, token sign-ins directly."""
    logger.info(
        "sign-in succeeded",
        extra={"user_id": user.pk, "path": request.path, "ip": client_ip(request), "second_factor": second_factor},
    )
    if user.is_staff:
        audit_record(
            action=AuditAction.LOGIN,
            resource_type="auth.user",
            resource_id=str(user.pk),
            new_value={"second_factor": second_factor, "via": "console" if _is_console(request) else "token"},
            actor=user,
            request=request,
        )


def _is_console(request) -> bool:
    return request.path.startswith(CONSOLE_PREFIX)


def _on_logged_in(sender, request, user, **kwargs):
    # A sign-in without a request path (a test client's force_login, a shell) is no client's.
    if request is None or not request.path:
        return
    sign_in_succeeded(request=request, user=user, second_factor=getattr(user, "otp_device", None) is not None)
    if _is_console(request) and request.session.session_key:
        StaffSession.objects.update_or_create(
            session_key=request.session.session_key,
            defaults={
                "user": user,
                "ip_address": client_ip(request),
                "user_agent": request.META.get("HTTP_USER_AGENT", "")[:1000],
            },
        )


def _on_logged_out(sender, request, user, **kwargs):
    if request is not None and request.session.session_key:
        StaffSession.objects.filter(session_key=request.session.session_key, ended_at=None).update(
            ended_at=timezone.now()
        )


def _on_login_failed(sender, credentials, request=None, reason="invalid_credentials", **kwargs):
    if request is None:
        return
    username = attempted_username(request, credentials)
    account = account_for(username) if username else None
    logger.warning(
        "sign-in failed", extra={"username": username, "path": request.path, "ip": client_ip(request), "reason": reason}
    )
    audit_record(
        action=AuditAction.LOGIN_FAILED,
        resource_type="auth.user",
        resource_id=str(account.pk) if account is not None else "",
        new_value={"username": username, "reason": reason},
        status_code=401,
        request=request,
    )


def _on_locked_out(sender, request, username, ip_address, **kwargs):
    logger.warning("sign-in locked out", extra={"username": username, "path": request.path, "ip": ip_address})
    audit_record(
        action=AuditAction.LOCKOUT,
        resource_type="auth.user",
        new_value={"username": username, "ip": ip_address, "minutes": settings.LOGIN_LOCKOUT_MINUTES},
        status_code=429,
        request=request,
    )


def authenticator_pending(*, user) -> TOTPDevice:
    """The authenticator `user` is enrolling (its secret shown as a QR code until one code confirms it)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return device or TOTPDevice.objects.create(user=user, name=AUTHENTICATOR_NAME, confirmed=False)


@transaction.atomic
def authenticator_confirm(*, device: TOTPDevice) -> None:
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    audit_record(
        action=AuditAction.CREATE,
        resource_type="otp_totp.totpdevice",
        resource_id=str(device.pk),
        new_value={"user": device.user_id, "name": device.name, "confirmed": True},
        actor=device.user,
    )


@transaction.atomic
def recovery_codes_replace(*, user) -> list[str]:
    """A fresh set of single-use recovery codes for `user`; the old ones stop working."""
    device, _ = StaticDevice.objects.get_or_create(user=user, name=RECOVERY_DEVICE_NAME, defaults={"confirmed": True})
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(settings.STAFF_RECOVERY_CODES)]
    StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    audit_record(
        action=AuditAction.UPDATE,
        resource_type="otp_static.staticdevice",
        resource_id=str(device.pk),
        new_value={"user": user.pk, "recovery_codes": len(codes)},
        actor=user,
    )
    return codes


@transaction.atomic
def staff_session_revoke(*, staff_session: StaffSession, actor, reason: str = "") -> None:
    """Ends a console session at once: its next request finds no session and signs in again."""
    import_module(settings.SESSION_ENGINE).SessionStore(session_key=staff_session.session_key).delete()
    if staff_session.ended_at is None:
        staff_session.ended_at = timezone.now()
        staff_session.revoked_by = actor
        staff_session.save(update_fields=["ended_at", "revoked_by", "updated_at"])
    audit_record(
        action=AuditAction.REVOKE,
        resource_type="billing_project.staffsession",
        resource_id=str(staff_session.pk),
        new_value={"user": staff_session.user_id, "started": staff_session.created_at.isoformat(), "reason": reason},
        actor=actor,
    )


@transaction.atomic
def refresh_token_revoke(*, token: OutstandingToken, actor, reason: str = "") -> None:
    """Blacklists an issued refresh token (an API session): it can no longer be refreshed."""
    _, created = BlacklistedToken.objects.get_or_create(token=token)
    if created:
        audit_record(
            action=AuditAction.REVOKE,
            resource_type="token_blacklist.outstandingtoken",
            resource_id=str(token.pk),
            new_value={"user": token.user_id, "jti": token.jti, "reason": reason},
            actor=actor,
        )


def connect_signals() -> None:
    from axes.signals import user_locked_out

    user_logged_in.connect(_on_logged_in, dispatch_uid="signin-logged-in")
    user_logged_out.connect(_on_logged_out, dispatch_uid="signin-logged-out")
    user_login_failed.connect(_on_login_failed, dispatch_uid="signin-login-failed")
    user_locked_out.connect(_on_locked_out, dispatch_uid="signin-locked-out")
