from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model

from conftest import bearer
from credits.models import UserCreditBalance
from subscriptions.models import Subscription, UserEntitlement
from subscriptions.services import tier_catalog_seed

pytestmark = pytest.mark.django_db

PASSWORD = "a long enough passphrase"


@pytest.fixture(autouse=True)
def catalog():
    tier_catalog_seed()


def register(api_client, email="new@example.com", password=PASSWORD):
    return api_client.post("/api/v1/auth/register/", {"email": email, "password": password}, format="json")


def test_register_creates_a_free_tier_user_with_free_credits(api_client):
    response = register(api_client, email="New@Example.com")

    assert response.status_code == 201
    user = get_user_model().objects.get(email="new@example.com")
    assert response.json() == {"id": user.pk, "email": "new@example.com"}
    subscription = Subscription.objects.get(user=user)
    assert (subscription.tier, subscription.status) == ("free", "active")
    assert UserCreditBalance.objects.get(user=user).amount == 2000
    assert UserEntitlement.objects.get(user=user).tier == "free"


def test_register_twice_with_the_same_email_is_a_400_problem_on_email(api_client):
    register(api_client)

    response = register(api_client, email="NEW@example.com")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "validation_error"
    assert "email" in body["errors"]
    assert get_user_model().objects.filter(email__iexact="new@example.com").count() == 1


def test_register_with_a_weak_password_writes_nothing(api_client):
    response = register(api_client, password="123")

    assert response.status_code == 400
    assert "password" in response.json()["errors"]
    assert not get_user_model().objects.exists()


def test_token_then_me_answers_id_email_and_tier(api_client):
    register(api_client)

    tokens = api_client.post(
        "/api/v1/auth/token/", {"email": "new@example.com", "password": PASSWORD}, format="json"
    ).json()
    response = api_client.get("/api/v1/me/", **bearer(tokens["access"]))

    assert response.status_code == 200
    assert response.json()["email"] == "new@example.com"
    assert response.json()["tier"] == "free"


def test_token_with_a_wrong_password_is_a_401_problem(api_client):
    register(api_client)

    response = api_client.post("/api/v1/auth/token/", {"email": "new@example.com", "password": "nope"}, format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


def test_refresh_token_gives_a_new_access_token_and_rotates(api_client):
    register(api_client)
    tokens = api_client.post(
        "/api/v1/auth/token/", {"email": "new@example.com", "password": PASSWORD}, format="json"
    ).json()

    refreshed = api_client.post("/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    replayed = api_client.post("/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")

    assert refreshed.status_code == 200
    assert api_client.get("/api/v1/me/", **bearer(refreshed.json()["access"])).status_code == 200
    assert "refresh" in refreshed.json()
    assert replayed.status_code == 401  # the old refresh token was blacklisted by the rotation


def test_expired_refresh_token_is_refused(api_client):
    register(api_client)
    tokens = api_client.post(
        "/api/v1/auth/token/", {"email": "new@example.com", "password": PASSWORD}, format="json"
    ).json()

    with time_machine.travel(timedelta(days=8)):
        response = api_client.post("/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"


def test_expired_access_token_is_401(api_client):
    register(api_client)
    tokens = api_client.post(
        "/api/v1/auth/token/", {"email": "new@example.com", "password": PASSWORD}, format="json"
    ).json()

    with time_machine.travel(timedelta(minutes=16)):
        response = api_client.get("/api/v1/me/", **bearer(tokens["access"]))

    assert response.status_code == 401


def test_access_token_with_a_bad_signature_is_401(api_client, user_client):
    token = user_client._credentials["HTTP_AUTHORIZATION"].split()[1]
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"

    response = api_client.get("/api/v1/me/", **bearer(forged))

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
