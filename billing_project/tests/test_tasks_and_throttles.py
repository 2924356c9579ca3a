from datetime import timedelta

import pytest
import time_machine
from rest_framework.throttling import ScopedRateThrottle

from billing_project.celery import app
from billing_project.models import IdempotencyKey
from billing_project.tasks import purge_idempotency_keys

pytestmark = pytest.mark.django_db


def key_row(key: str) -> IdempotencyKey:
    return IdempotencyKey.objects.create(
        caller="user:1",
        path="/api/v1/x/",
        key=key,
        request_hash="0" * 64,
        status_code=201,
        content_type="application/json",
    )


def test_purge_removes_only_keys_older_than_a_day():
    with time_machine.travel(timedelta(hours=-25)):
        key_row("old")
    key_row("fresh")

    assert purge_idempotency_keys.delay().get() == 1

    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh"]


def test_the_purge_is_on_the_beat_schedule():
    tasks = {entry["task"] for entry in app.conf.beat_schedule.values()}

    assert "billing_project.tasks.purge_idempotency_keys" in tasks


def test_login_attempts_are_throttled_with_a_retry_after(api_client, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"auth": "3/min"})
    credentials = {"email": "nobody@example.com", "password": "wrong"}

    statuses = [api_client.post("/api/v1/auth/token/", credentials, format="json").status_code for _ in range(4)]
    throttled = api_client.post("/api/v1/auth/token/", credentials, format="json")

    assert statuses == [401, 401, 401, 429]
    assert throttled.json()["code"] == "throttled"
    assert throttled.json()["retry_after"] > 0
    assert int(throttled["Retry-After"]) > 0
