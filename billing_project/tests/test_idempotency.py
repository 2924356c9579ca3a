import pytest

from billing_project.models import IdempotencyKey
from conftest import access_token_for, bearer
from subscriptions.services import tier_catalog_seed

pytestmark = pytest.mark.django_db


@pytest.fixture
def target(django_user_model):
    return django_user_model.objects.create_user(username="target@example.com", email="target@example.com")


def erase(client, user_id, key, **extra):
    return client.delete(f"/api/v1/admin/users/{user_id}/", HTTP_IDEMPOTENCY_KEY=key, **extra)


@pytest.mark.urls("billing_project.tests.urls")
def test_same_key_and_body_replays_the_stored_response(api_client, service_token):
    headers = {"HTTP_IDEMPOTENCY_KEY": "abc", **bearer(service_token("usage:write"))}

    first = api_client.post("/api/v1/probe/service/", {"n": 1}, format="json", **headers)
    second = api_client.post("/api/v1/probe/service/", {"n": 1}, format="json", **headers)

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert IdempotencyKey.objects.count() == 1


@pytest.mark.urls("billing_project.tests.urls")
def test_same_key_with_another_body_is_a_422_problem(api_client, service_token):
    headers = {"HTTP_IDEMPOTENCY_KEY": "abc", **bearer(service_token("usage:write"))}
    api_client.post("/api/v1/probe/service/", {"n": 1}, format="json", **headers)

    response = api_client.post("/api/v1/probe/service/", {"n": 2}, format="json", **headers)

    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "idempotency_key_reused"


def test_replay_does_not_repeat_the_effect(api_client, user, django_user_model):
    tier_catalog_seed()
    body = {"email": "once@example.com", "password": "a long enough passphrase"}
    headers = {"HTTP_IDEMPOTENCY_KEY": "register-1", **bearer(access_token_for(user))}

    first = api_client.post("/api/v1/auth/register/", body, format="json", **headers)
    second = api_client.post("/api/v1/auth/register/", body, format="json", **headers)

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert django_user_model.objects.filter(email="once@example.com").count() == 1


def test_keys_are_scoped_to_the_caller(api_client, user, other_user):
    tier_catalog_seed()
    body = {"email": "scoped@example.com", "password": "a long enough passphrase"}
    mine = api_client.post(
        "/api/v1/auth/register/", body, format="json", HTTP_IDEMPOTENCY_KEY="k", **bearer(access_token_for(user))
    )

    theirs = api_client.post(
        "/api/v1/auth/register/", body, format="json", HTTP_IDEMPOTENCY_KEY="k", **bearer(access_token_for(other_user))
    )

    assert mine.status_code == 201
    assert theirs.status_code == 400  # executed for real (a duplicate e-mail), not replayed from another caller
    assert "Idempotent-Replayed" not in theirs


@pytest.mark.urls("billing_project.tests.urls")
def test_a_server_error_is_not_stored_so_the_client_can_retry(user_client):
    response = user_client.post("/api/v1/probe/crash/", {}, format="json", HTTP_IDEMPOTENCY_KEY="boom")

    assert response.status_code == 500
    assert not IdempotencyKey.objects.exists()


def test_an_overlong_key_is_a_400_problem(user_client):
    response = user_client.post("/api/v1/me/", {}, format="json", HTTP_IDEMPOTENCY_KEY="x" * 256)

    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_invalid"
