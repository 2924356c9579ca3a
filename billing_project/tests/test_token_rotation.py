"""`auth/token/refresh/`: each refresh token is exchanged once; presenting it again ends its sign-in
(every token rotated from it); a deleted or deactivated user's token is a 401, never a 500."""

from collections import Counter

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from billing_project.models import RevokedTokenFamily
from billing_project.token_rotation import FAMILY_CLAIM
from conftest import bearer, run_concurrently

REFRESH_URL = "/api/v1/auth/token/refresh/"


def sign_in(user) -> str:
    """A refresh token, as `auth/token/` gives it."""
    return str(RefreshToken.for_user(user))


def refresh(token: str):
    return APIClient().post(REFRESH_URL, {"refresh": token}, format="json")


def assert_refused(response, code: str) -> None:
    assert response.status_code == 401, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == code


@pytest.mark.django_db
def test_a_refresh_answers_a_working_access_token_and_the_next_refresh_token_of_the_sign_in(user):
    first = sign_in(user)

    response = refresh(first)

    assert response.status_code == 200, response.content
    body = response.json()
    assert APIClient().get("/api/v1/me/", **bearer(body["access"])).status_code == 200
    family = RefreshToken(first, verify=False)["jti"]  # blacklisted now: read, not verified
    assert RefreshToken(body["refresh"])[FAMILY_CLAIM] == family
    assert refresh(body["refresh"]).status_code == 200


@pytest.mark.django_db
def test_reusing_a_rotated_token_revokes_its_whole_sign_in(user):
    # given: a sign-in refreshed twice (first -> second -> third)
    first = sign_in(user)
    second = refresh(first).json()["refresh"]
    third = refresh(second).json()["refresh"]

    # when: the first token shows up again (a thief, or a stale copy)
    reused = refresh(first)

    # then: refused, and the newest token of that sign-in is dead too
    assert_refused(reused, "token_reused")
    assert_refused(refresh(third), "token_revoked")
    assert RevokedTokenFamily.objects.get().user == user

    # and another sign-in of the same user is untouched
    other = sign_in(user)
    assert refresh(other).status_code == 200


@pytest.mark.django_db
def test_an_erased_users_refresh_token_is_a_401_problem(user, staff_client):
    token = sign_in(user)

    user.delete()

    assert_refused(refresh(token), "no_active_account")


@pytest.mark.django_db
def test_a_deactivated_users_refresh_token_is_a_401_problem(user):
    token = sign_in(user)
    user.is_active = False
    user.save(update_fields=["is_active"])

    assert_refused(refresh(token), "no_active_account")


@pytest.mark.django_db
def test_a_malformed_or_foreign_token_is_a_401_problem(user):
    access = str(RefreshToken.for_user(user).access_token)

    assert_refused(refresh("not.a.token"), "token_not_valid")
    assert_refused(refresh(access), "token_not_valid")  # an access token is no refresh token


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_parallel_refreshes_of_one_token_succeed_once(user):
    token = sign_in(user)

    responses = run_concurrently(lambda _: refresh(token), list(range(8)))

    answers = Counter((response.status_code, response.json().get("code")) for response in responses)
    assert answers == {(200, None): 1, (401, "token_reused"): 7}, answers
    # two holders of one token: the sign-in is over for both
    (winner,) = [response.json()["refresh"] for response in responses if response.status_code == 200]
    assert_refused(refresh(winner), "token_revoked")
