import pytest
from rest_framework.test import APIClient

from billing_project.models import IdempotencyKey
from conftest import access_token_for, bearer, run_concurrently
from subscriptions.services import tier_catalog_seed

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_concurrent_requests_with_one_key_take_effect_once(user, django_user_model):
    tier_catalog_seed()
    token = access_token_for(user)
    body = {"email": "racer@example.com", "password": "a long enough passphrase"}

    def send(_):
        return APIClient().post(
            "/api/v1/auth/register/", body, format="json", HTTP_IDEMPOTENCY_KEY="race", **bearer(token)
        )

    responses = run_concurrently(send, list(range(8)))

    assert all(not isinstance(response, Exception) for response in responses), responses
    assert {response.status_code for response in responses} == {201}
    assert len({response.content for response in responses}) == 1
    assert django_user_model.objects.filter(email="racer@example.com").count() == 1
    assert IdempotencyKey.objects.count() == 1
