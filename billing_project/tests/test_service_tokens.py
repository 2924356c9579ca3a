"""Service tokens: each has a record (id, service, scopes, expiry, signing key id, last use), is
listed in the console and revoked on its own, at once on every worker; two signing keys verify
during a rotation; lifetimes come from settings."""

from datetime import timedelta
from io import StringIO

import jwt
import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from audit.models import AdminAuditLog, AuditAction
from billing_project.auth import SERVICE_TOKEN_ALGORITHM, service_token_cache_key, signing_key_id
from billing_project.checks import production_problems
from billing_project.errors import RuleViolation
from billing_project.models import ServiceToken
from billing_project.service_tokens import service_token_issue, service_token_revoke
from conftest import bearer

pytestmark = [pytest.mark.django_db, pytest.mark.urls("billing_project.tests.urls")]

PROBE = "/api/v1/probe/service/"
OLD_SECRET = "old-service-signing-secret-that-is-long-enough-0123"
NEW_SECRET = "new-service-signing-secret-that-is-long-enough-4567"


def _issue(**overrides) -> tuple[str, ServiceToken]:
    issued = service_token_issue(service="gateway", scopes=["usage:write"], **overrides)
    return issued.token, issued.record


def test_an_issued_token_carries_its_record_id_and_its_signing_key_id(settings):
    token, record = _issue(lifetime=timedelta(days=3))

    header, claims = jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})
    assert header["kid"] == signing_key_id(settings.SERVICE_JWT_SECRET) == record.key_id
    assert claims["jti"] == str(record.pk)
    assert (record.service, record.scopes) == ("gateway", ["usage:write"])
    assert abs(record.expires_at - (timezone.now() + timedelta(days=3))) < timedelta(minutes=1)
    assert settings.SERVICE_JWT_SECRET not in record.key_id


def test_a_call_records_the_tokens_last_use(api_client):
    token, record = _issue()

    assert api_client.post(PROBE, **bearer(token)).status_code == 201

    record.refresh_from_db()
    assert record.last_used_at is not None


# Regression (issue 20): service tokens could not be listed or revoked one by one.
def test_a_revoked_token_is_refused_at_once_though_workers_had_it_cached(
    api_client, django_capture_on_commit_callbacks
):
    token, record = _issue()
    other, _ = _issue()
    assert api_client.post(PROBE, **bearer(token)).status_code == 201
    assert cache.get(service_token_cache_key(str(record.pk)))  # known live by this worker

    with django_capture_on_commit_callbacks(execute=True):
        service_token_revoke(token_id=record.pk, reason="leaked in a log")
    refused = api_client.post(PROBE, **bearer(token))

    assert refused.status_code == 401
    assert refused.json()["code"] == "token_revoked"
    assert api_client.post(PROBE, **bearer(other)).status_code == 201
    row = AdminAuditLog.objects.get(action=AuditAction.REVOKE)
    assert (row.resource_type, row.resource_id) == ("billing_project.servicetoken", str(record.pk))


def test_the_console_lists_service_tokens_and_revokes_one(
    admin_client, admin_user, api_client, django_capture_on_commit_callbacks
):
    token, record = _issue()

    listed = admin_client.get("/admin/billing_project/servicetoken/")
    assert api_client.post(PROBE, **bearer(token)).status_code == 201
    with django_capture_on_commit_callbacks(execute=True):
        revoked = admin_client.post(
            "/admin/billing_project/servicetoken/",
            {"action": "revoke_service_tokens", "_selected_action": [record.pk], "apply": "1", "reason": "rotated"},
        )

    assert listed.status_code == 200
    assert str(record.pk) in listed.content.decode() and "usage:write" in listed.content.decode()
    assert token not in listed.content.decode()
    assert revoked.status_code == 302
    record.refresh_from_db()
    assert (record.revoked_by, record.revoked_reason) == (admin_user, "rotated")
    assert api_client.post(PROBE, **bearer(token)).status_code == 401


def test_the_revoke_command_revokes_one_token_by_its_id():
    _, record = _issue()

    call_command("revoke_service_token", str(record.pk), "--reason", "decommissioned", stdout=StringIO())

    record.refresh_from_db()
    assert record.revoked_at is not None
    with pytest.raises(CommandError):
        call_command("revoke_service_token", str(record.pk), stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("revoke_service_token", "not-an-id", stdout=StringIO())


def test_a_token_signed_with_the_previous_key_works_during_a_rotation_and_not_after(settings, api_client):
    settings.SERVICE_JWT_SECRET = OLD_SECRET
    token, _ = _issue()

    settings.SERVICE_JWT_SECRET, settings.SERVICE_JWT_PREVIOUS_SECRET = NEW_SECRET, OLD_SECRET
    during = api_client.post(PROBE, **bearer(token))
    fresh, fresh_record = _issue()
    settings.SERVICE_JWT_PREVIOUS_SECRET = ""
    after = api_client.post(PROBE, **bearer(token))

    assert during.status_code == 201
    assert fresh_record.key_id == signing_key_id(NEW_SECRET)
    assert (after.status_code, after.json()["code"]) == (401, "token_invalid")
    assert api_client.post(PROBE, **bearer(fresh)).status_code == 201


def test_a_token_issued_before_token_records_is_refused(settings, api_client):
    now = timezone.now()
    legacy = jwt.encode(
        {
            "token_type": "service",
            "service": "gateway",
            "scopes": ["usage:write"],
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(days=90)).timestamp()),
            "jti": "0" * 32,
        },
        settings.SERVICE_JWT_SECRET,
        algorithm=SERVICE_TOKEN_ALGORITHM,
    )

    response = api_client.post(PROBE, **bearer(legacy))

    assert (response.status_code, response.json()["code"]) == (401, "token_invalid")


# Regression (issue 20): service tokens lived 90 days, fixed.
def test_the_command_gives_the_lifetime_of_the_settings_and_refuses_a_longer_one(settings):
    settings.SERVICE_TOKEN_LIFETIME_DAYS, settings.SERVICE_TOKEN_MAX_LIFETIME_DAYS = 7, 30
    out = StringIO()

    call_command("issue_service_token", "--service", "gateway", "--scope", "usage:write", stdout=out)

    record = ServiceToken.objects.get()
    assert abs(record.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    assert str(record.pk) in out.getvalue()
    with pytest.raises(CommandError, match="1 to 30 days"):
        call_command("issue_service_token", "--service", "g", "--scope", "a", "--days", "31", stdout=StringIO())


def test_the_service_refuses_a_lifetime_beyond_the_maximum(settings):
    settings.SERVICE_TOKEN_MAX_LIFETIME_DAYS = 30

    with pytest.raises(RuleViolation) as refused:
        _issue(lifetime=timedelta(days=30, seconds=1))

    assert refused.value.code == "service_token_lifetime_invalid"
    assert not ServiceToken.objects.exists()


def test_production_refuses_a_short_or_reused_previous_service_key(settings):
    settings.DEBUG = False
    # a clean current key, so the reused one is refused for the reuse and not as a placeholder
    settings.SERVICE_JWT_SECRET = NEW_SECRET
    settings.SERVICE_JWT_PREVIOUS_SECRET = "short"
    short = production_problems()
    settings.SERVICE_JWT_PREVIOUS_SECRET = NEW_SECRET
    reused = production_problems()

    assert "SERVICE_JWT_PREVIOUS_SECRET must be at least 32 characters long." in short
    assert [problem for problem in reused if "SERVICE_JWT_PREVIOUS_SECRET" in problem] == [
        "SERVICE_JWT_PREVIOUS_SECRET must differ from SERVICE_JWT_SECRET, JWT_SECRET and SECRET_KEY."
    ]
