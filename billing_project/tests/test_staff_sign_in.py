"""Signing in to the console and to auth/token/: failures counted per account and per IP with a
lockout, every attempt audited and logged, a second factor (TOTP or a recovery code) for staff,
staff sessions listed and revoked, and the same work whatever account an e-mail names."""

import logging
from io import StringIO

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework_simplejwt.tokens import AccessToken

from audit.models import AdminAuditLog, AuditAction
from billing_project.auth import OTP_CLAIM
from billing_project.models import StaffSession
from billing_project.signin import recovery_codes_replace
from conftest import bearer, role_grant

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
TOKEN = "/api/v1/auth/token/"
LOGIN = "/admin/login/"


@pytest.fixture
def staff_member(django_user_model):
    user = django_user_model.objects.create_user(
        username="ops@example.com", email="ops@example.com", password=PASSWORD, is_staff=True
    )
    return role_grant(user, "admin")


@pytest.fixture
def lockout_after_three(settings):
    settings.AXES_FAILURE_LIMIT = 3


def _code(device: TOTPDevice) -> str:
    return f"{TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token():06d}"


def _authenticator(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)


def _console_login(client, username, password, otp_token=""):
    return client.post(LOGIN, {"username": username, "password": password, "otp_token": otp_token, "next": "/admin/"})


# Regression (issue 20): 30 wrong console passwords in 37 s all answered 200, the right one then
# signed in, and no attempt left an audit row or a log line.
def test_console_locks_an_account_out_after_repeated_failures_and_audits_each(
    lockout_after_three, staff_member, caplog
):
    client = Client()
    caplog.set_level(logging.INFO, logger="billing_project.signin")

    failures = [_console_login(client, "ops@example.com", "wrong").status_code for _ in range(3)]
    right_password = _console_login(client, "ops@example.com", PASSWORD)

    assert failures == [200, 200, 429]
    assert right_password.status_code == 429
    assert "Sign-in is locked" in right_password.content.decode()
    assert "_auth_user_id" not in client.session
    rows = AdminAuditLog.objects.filter(resource_type="auth.user").order_by("sequence")
    actions = [row.action for row in rows]
    assert actions.count(AuditAction.LOGIN_FAILED) == 4
    assert actions.index(AuditAction.LOCKOUT) == 2  # recorded as the third failure locks the account
    assert {row.resource_id for row in rows if row.action == AuditAction.LOGIN_FAILED} == {str(staff_member.pk)}
    assert rows.first().new_value == {"username": "ops@example.com", "reason": "invalid_credentials"}
    assert rows.first().endpoint == LOGIN and rows.first().status_code == 401
    assert rows.first().request_body["password"] == "[redacted]"
    assert [record.message for record in caplog.records].count("sign-in failed") == 4


def test_one_address_failing_on_many_accounts_is_locked_out_for_all(lockout_after_three, staff_member, api_client):
    for name in ("a", "b", "c"):
        api_client.post(TOKEN, {"email": f"{name}@example.com", "password": "guess"}, format="json")

    refused = api_client.post(TOKEN, {"email": "ops@example.com", "password": PASSWORD}, format="json")

    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/problem+json"
    assert refused.json()["code"] == "login_locked_out"
    assert int(refused["Retry-After"]) > 0


def test_an_account_is_locked_out_whatever_address_the_attempts_come_from(lockout_after_three, staff_member):
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        Client(REMOTE_ADDR=address).post(LOGIN, {"username": "ops@example.com", "password": "wrong"})

    refused = _console_login(Client(REMOTE_ADDR="198.51.100.7"), "ops@example.com", PASSWORD)

    assert refused.status_code == 429


def test_a_console_sign_in_is_audited_and_opens_a_listed_session(staff_member):
    client = Client(HTTP_USER_AGENT="Firefox/130")

    response = _console_login(client, "ops@example.com", PASSWORD)

    assert response.status_code == 302
    row = AdminAuditLog.objects.get(action=AuditAction.LOGIN)
    assert (row.actor, row.resource_id, row.new_value) == (
        staff_member,
        str(staff_member.pk),
        {"second_factor": False, "via": "console"},
    )
    session = StaffSession.objects.get(user=staff_member)
    assert (session.user_agent, session.ip_address, session.ended_at) == ("Firefox/130", "127.0.0.1", None)


def test_a_non_staff_account_is_refused_by_the_console_and_audited(user):
    response = _console_login(Client(), user.username, "correct horse battery")

    assert response.status_code == 200
    row = AdminAuditLog.objects.get(action=AuditAction.LOGIN_FAILED)
    assert row.new_value == {"username": user.username, "reason": "not_staff"}


def test_ending_a_staff_session_in_the_console_signs_it_out(staff_member, admin_client, admin_user):
    victim = Client()
    _console_login(victim, "ops@example.com", PASSWORD)
    session = StaffSession.objects.get(user=staff_member)
    assert victim.get("/admin/").status_code == 200

    listed = admin_client.get("/admin/billing_project/staffsession/")
    ended = admin_client.post(
        "/admin/billing_project/staffsession/",
        {"action": "revoke_staff_sessions", "_selected_action": [session.pk], "apply": "1", "reason": "laptop lost"},
    )

    assert session.session_key not in listed.content.decode()
    assert ended.status_code == 302
    assert victim.get("/admin/").status_code == 302  # back to the login page
    assert not Session.objects.filter(session_key=session.session_key).exists()
    session.refresh_from_db()
    assert session.ended_at is not None and session.revoked_by == admin_user
    row = AdminAuditLog.objects.get(action=AuditAction.REVOKE, resource_type="billing_project.staffsession")
    assert row.new_value["reason"] == "laptop lost"


# Second factor: the console


def test_staff_without_an_authenticator_are_sent_to_enrol_when_staff_need_one(settings, staff_member):
    settings.STAFF_2FA_REQUIRED = True
    client = Client()

    signed_in = _console_login(client, "ops@example.com", PASSWORD)
    index = client.get("/admin/", follow=True)

    assert signed_in.status_code == 302
    assert index.redirect_chain[-1][0] == "/admin/second-factor/"
    assert "Set up your authenticator" in index.content.decode()
    assert client.get("/admin/credits/provider/").status_code == 302


def test_enrolling_an_authenticator_verifies_the_session_and_shows_recovery_codes_once(settings, staff_member):
    settings.STAFF_2FA_REQUIRED = True
    client = Client()
    _console_login(client, "ops@example.com", PASSWORD)
    page = client.get("/admin/second-factor/")
    device = TOTPDevice.objects.get(user=staff_member, confirmed=False)

    confirmed = client.post("/admin/second-factor/", {"otp_token": _code(device)})

    assert "<svg" in page.content.decode()
    assert confirmed.status_code == 200
    codes = confirmed.context["recovery_codes"]
    assert len(codes) == settings.STAFF_RECOVERY_CODES
    assert sorted(StaticToken.objects.filter(device__user=staff_member).values_list("token", flat=True)) == sorted(
        codes
    )
    device.refresh_from_db()
    assert device.confirmed
    assert client.get("/admin/credits/provider/").status_code == 200
    assert codes[0] not in client.get("/admin/second-factor/").content.decode()
    assert AdminAuditLog.objects.filter(resource_type="otp_totp.totpdevice", action=AuditAction.CREATE).exists()


def test_an_enrolled_staff_member_signs_in_with_a_code_or_a_recovery_code_once(staff_member):
    device = _authenticator(staff_member)
    codes = recovery_codes_replace(user=staff_member)

    without = _console_login(Client(), "ops@example.com", PASSWORD)
    with_code = Client()
    _console_login(with_code, "ops@example.com", PASSWORD, _code(device))
    with_recovery = Client()
    _console_login(with_recovery, "ops@example.com", PASSWORD, codes[0])
    reused = _console_login(Client(), "ops@example.com", PASSWORD, codes[0])

    assert without.status_code == 200 and "authenticator" in without.content.decode()
    assert with_code.get("/admin/credits/provider/").status_code == 200
    assert with_recovery.get("/admin/credits/provider/").status_code == 200
    assert reused.status_code == 200
    assert AdminAuditLog.objects.filter(action=AuditAction.LOGIN, new_value__second_factor=True).count() == 2
    failures = AdminAuditLog.objects.filter(action=AuditAction.LOGIN_FAILED)
    assert sorted(row.new_value["reason"] for row in failures) == ["otp_invalid", "otp_invalid"]


# Second factor: staff tokens from auth/token/


def test_a_staff_token_needs_the_authenticator_code_when_staff_need_one(settings, staff_member, api_client):
    settings.STAFF_2FA_REQUIRED = True
    device = _authenticator(staff_member)

    missing = api_client.post(TOKEN, {"email": "ops@example.com", "password": PASSWORD}, format="json")
    right = api_client.post(
        TOKEN, {"email": "ops@example.com", "password": PASSWORD, "otp": _code(device)}, format="json"
    )
    wrong = api_client.post(TOKEN, {"email": "ops@example.com", "password": PASSWORD, "otp": "000000"}, format="json")

    assert (missing.status_code, missing.json()["code"]) == (401, "otp_required")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "otp_invalid")
    assert right.status_code == 200
    access = right.json()["access"]
    assert AccessToken(access)[OTP_CLAIM] is True
    assert api_client.get("/api/v1/admin/audit-logs/", **bearer(access)).status_code == 200
    failure = AdminAuditLog.objects.get(action=AuditAction.LOGIN_FAILED)
    assert failure.new_value == {"username": "ops@example.com", "reason": "otp_invalid"}
    assert "000000" not in str(failure.request_body)
    login = AdminAuditLog.objects.get(action=AuditAction.LOGIN)
    assert login.new_value == {"second_factor": True, "via": "token"}


def test_a_staff_member_without_an_authenticator_gets_no_token_when_staff_need_one(settings, staff_member, api_client):
    settings.STAFF_2FA_REQUIRED = True

    response = api_client.post(TOKEN, {"email": "ops@example.com", "password": PASSWORD}, format="json")

    assert (response.status_code, response.json()["code"]) == (403, "otp_setup_required")


def test_wrong_authenticator_codes_count_toward_the_lockout(lockout_after_three, staff_member, api_client):
    _authenticator(staff_member)
    body = {"email": "ops@example.com", "password": PASSWORD, "otp": "000000"}

    answers = [api_client.post(TOKEN, body, format="json").json()["code"] for _ in range(3)]

    assert answers == ["otp_invalid", "otp_invalid", "login_locked_out"]


def test_customers_sign_in_with_e_mail_and_password_only(settings, user, api_client):
    settings.STAFF_2FA_REQUIRED = True

    response = api_client.post(TOKEN, {"email": "USER@example.com", "password": PASSWORD}, format="json")

    assert response.status_code == 200
    assert OTP_CLAIM not in AccessToken(response.json()["access"])
    assert not AdminAuditLog.objects.filter(action=AuditAction.LOGIN).exists()


def test_the_demo_admin_signs_in_to_the_console_after_ensure_demo_admin(lockout_after_three, settings, monkeypatch):
    settings.DEBUG = True  # as scripts/dev runs it (the test runner turns DEBUG off)
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "demo-password-for-the-console")
    for _ in range(3):
        _console_login(Client(), "admin@example.com", "forgotten")

    call_command("ensure_demo_admin", stdout=(out := StringIO()))
    client = Client()
    signed_in = _console_login(client, "admin@example.com", "demo-password-for-the-console")

    assert signed_in.status_code == 302
    assert client.get("/admin/").status_code == 200
    assert "2FA:      off" in out.getvalue()


# Same work for every account an e-mail may name


class CountingHasher(MD5PasswordHasher):
    """The tests' fast hasher, counting how often a password is hashed."""

    calls = 0

    def encode(self, password, salt):
        type(self).calls += 1
        return super().encode(password, salt)


# Regression (issue 20): a deactivated account's e-mail answered in 10-25 ms, others in 1.2-2.1 s.
def test_signing_in_hashes_once_for_unknown_inactive_and_active_accounts(settings, django_user_model, api_client):
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    django_user_model.objects.create_user(username="on@example.com", email="on@example.com", password=PASSWORD)
    django_user_model.objects.create_user(
        username="off@example.com", email="off@example.com", password=PASSWORD, is_active=False
    )
    work = {}

    for email in ("nobody@example.com", "off@example.com", "on@example.com"):
        CountingHasher.calls = 0
        response = api_client.post(TOKEN, {"email": email, "password": "not the password"}, format="json")
        work[email] = (response.status_code, response.json()["code"], CountingHasher.calls)

    assert work == dict.fromkeys(work, (401, "invalid_credentials", 1))


def test_deleting_an_authenticator_in_the_console_is_audited_without_its_secret(admin_client, staff_member):
    device = _authenticator(staff_member)

    response = admin_client.post(f"/admin/otp_totp/totpdevice/{device.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(pk=device.pk).exists()
    row = AdminAuditLog.objects.get(resource_type="otp_totp.totpdevice", action=AuditAction.DELETE)
    assert row.previous_value["key"] == "[redacted]"
    assert device.key not in str(row.previous_value)
