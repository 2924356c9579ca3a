"""A worker remembers the tokens it verified, by their exact text, and still refuses each once it
expires, once it is revoked, or when it differs from the verified one by a single character."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from billing_project.service_tokens import service_token_issue, service_token_revoke
from conftest import access_token_for, bearer

pytestmark = pytest.mark.django_db

USAGE_CHECK = "/api/v1/usage/check/"
ME_CREDITS = "/api/v1/me/credits/"
ME_BUDGET = "/api/v1/me/credits/budget/"


def _service_token(lifetime=timedelta(hours=1)):
    issued = service_token_issue(service="gateway", scopes=["usage:write"], lifetime=lifetime)
    return issued.token, issued.record


def _usage_check(api_client, token, user):
    return api_client.post(USAGE_CHECK, {"user_id": user.pk, "estimated_credits": 1}, format="json", **bearer(token))


def test_a_remembered_service_token_is_refused_once_it_expires(api_client, user):
    token, _ = _service_token(lifetime=timedelta(minutes=5))
    assert _usage_check(api_client, token, user).status_code == 200

    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        expired = _usage_check(api_client, token, user)

    assert (expired.status_code, expired.json()["code"]) == (401, "token_expired")


def test_a_remembered_service_token_is_refused_once_revoked(api_client, user, django_capture_on_commit_callbacks):
    token, record = _service_token()
    assert _usage_check(api_client, token, user).status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        service_token_revoke(token_id=record.pk)
    revoked = _usage_check(api_client, token, user)

    assert (revoked.status_code, revoked.json()["code"]) == (401, "token_revoked")


def test_a_token_one_character_off_a_remembered_one_is_verified_and_refused(api_client, user):
    token, _ = _service_token()
    assert _usage_check(api_client, token, user).status_code == 200
    user_token = access_token_for(user)
    assert api_client.get(ME_CREDITS, **bearer(user_token)).status_code == 200

    def tampered(text):
        return text[:-2] + ("A" if text[-2] != "A" else "B") + text[-1]

    assert _usage_check(api_client, tampered(token), user).status_code == 401
    assert api_client.get(ME_CREDITS, **bearer(tampered(user_token))).status_code == 401


def test_a_remembered_user_token_is_refused_once_it_expires(api_client, user, settings):
    token = access_token_for(user)
    assert api_client.get(ME_CREDITS, **bearer(token)).status_code == 200
    assert api_client.get(ME_BUDGET, **bearer(token)).status_code == 200

    with time_machine.travel(timezone.now() + settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"] + timedelta(seconds=5)):
        expired = [api_client.get(path, **bearer(token)) for path in (ME_CREDITS, ME_BUDGET)]

    assert [response.status_code for response in expired] == [401, 401]
