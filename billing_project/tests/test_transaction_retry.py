"""Deadlocks and serialization failures (PostgreSQL 40P01/40001) are retried a few times with jitter,
then answered 409 `transaction_conflict`; never 503 `database_unavailable`, never stored as the
answer to an Idempotency-Key. Real PostgreSQL errors, real threads, no transaction around requests."""

import threading
from collections import Counter

import pytest
from django.contrib.auth.models import Group
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from billing_project.models import IdempotencyKey
from billing_project.tests.urls import ConflictView, LockPairView
from conftest import access_token_for, bearer, run_concurrently

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("billing_project.tests.urls"),
]

CONFLICT_URL = "/api/v1/probe/conflict/"


@pytest.fixture(autouse=True)
def _fresh_probes(settings):
    settings.DB_CONFLICT_BACKOFF_SECONDS = 0.001
    ConflictView.attempts.clear()
    LockPairView.passed.clear()
    yield
    LockPairView.rendezvous = None


def conflicts(kind: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "db_transaction_conflicts_total", {"kind": kind, "outcome": outcome, "operation": "request"}
        )
        or 0.0
    )


@pytest.mark.parametrize(("sqlstate", "kind"), [("40P01", "deadlock"), ("40001", "serialization_failure")])
def test_a_transaction_conflict_is_retried_and_the_request_applies_once(user_client, sqlstate, kind):
    retried_before = conflicts(kind, "retried")

    response = user_client.post(CONFLICT_URL, {"name": "g", "sqlstate": sqlstate, "fail": 2}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["attempts"] == 3
    assert Group.objects.filter(name="g").count() == 1
    assert conflicts(kind, "retried") - retried_before == 2


def test_a_conflict_that_outlasts_the_retries_is_a_409_problem_that_says_so(user_client, settings):
    gave_up_before = conflicts("deadlock", "gave_up")

    response = user_client.post(CONFLICT_URL, {"name": "g", "sqlstate": "40P01", "fail": 99}, format="json")

    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    assert response["Retry-After"] == "1"
    body = response.json()
    assert body["code"] == "transaction_conflict"
    assert "deadlock" in body["detail"]
    assert ConflictView.attempts["g"] == settings.DB_CONFLICT_RETRIES + 1
    assert not Group.objects.exists()
    assert conflicts("deadlock", "gave_up") - gave_up_before == 1


def test_a_retried_request_stores_only_its_final_answer_for_its_idempotency_key(user_client):
    body = {"name": "g", "sqlstate": "40P01", "fail": 1}

    first = user_client.post(CONFLICT_URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = user_client.post(CONFLICT_URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() == {"name": "g", "attempts": 2}
    assert IdempotencyKey.objects.get().status_code == 201


def test_a_conflict_answer_is_never_stored_for_an_idempotency_key(user_client, settings):
    body = {"name": "g", "sqlstate": "40001", "fail": settings.DB_CONFLICT_RETRIES + 1}

    conflict = user_client.post(CONFLICT_URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert not IdempotencyKey.objects.exists()
    retry = user_client.post(CONFLICT_URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert (conflict.status_code, retry.status_code) == (409, 201)
    assert not retry.has_header("Idempotent-Replayed")
    assert Group.objects.filter(name="g").count() == 1


def test_two_requests_that_deadlock_both_succeed(user):
    # given two rows that two requests lock in opposite orders, each holding its first lock
    Group.objects.bulk_create([Group(name="a"), Group(name="b")])
    LockPairView.rendezvous = threading.Barrier(2)
    token = access_token_for(user)
    retried_before = conflicts("deadlock", "retried")

    def lock(order):
        client = APIClient()
        client.credentials(**bearer(token))
        response = client.post("/api/v1/probe/lock-pair/", {"order": order, "client": "".join(order)}, format="json")
        return response.status_code

    # when PostgreSQL detects the deadlock and aborts one of them
    statuses = run_concurrently(lock, [["a", "b"], ["b", "a"]])

    # then the victim runs again once the other has committed
    assert statuses == [200, 200]
    assert conflicts("deadlock", "retried") - retried_before == 1


def test_parallel_subscription_starts_answer_no_5xx():
    from subscriptions.models import LIVE_STATUSES, Subscription
    from subscriptions.services import account_register, tier_catalog_seed

    tier_catalog_seed()
    users = [account_register(email=f"u{i}@example.com", password="a long enough passphrase") for i in range(4)]

    def start(index):
        client = APIClient()
        client.credentials(**bearer(access_token_for(users[index % 4])))
        response = client.post("/api/v1/subscriptions/", {"tier": "pro_max", "billing_cycle": "monthly"}, format="json")
        return response.status_code, response.json().get("code")

    answers = Counter(run_concurrently(start, list(range(16))))

    # (a start converting a trial pays through a checkout operation: a parallel twin of it is told that
    # payment is in progress)
    allowed = {(201, None), (409, "subscription_exists"), (409, "transaction_conflict"), (409, "payment_in_progress")}
    assert set(answers) <= allowed, answers
    live = Subscription.objects.filter(tier="pro_max", status__in=LIVE_STATUSES).values_list("user_id", flat=True)
    assert sorted(live) == sorted(user.pk for user in users)
