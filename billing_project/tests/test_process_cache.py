"""What a worker remembers for PROCESS_CACHE_SECONDS of the shared cache's answers on the hottest paths
(a service token or a user still live, the price book's version): a change another worker makes
reaches this one within that time, and the worker that makes a change forgets its own copy at once.

"Another worker" is what it leaves behind in the shared state: the database rows and the shared cache
entries its on-commit hooks write; this process's own memory it cannot touch."""

import time

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone

from billing_project.auth import service_token_cache_key
from billing_project.models import ServiceToken
from billing_project.service_tokens import service_token_issue
from conftest import bearer
from credits.selectors import PRICING_VERSION_KEY, pricing_book

pytestmark = [pytest.mark.django_db, pytest.mark.urls("billing_project.tests.urls")]

PROBE = "/api/v1/probe/service/"


def later(seconds: float):
    return time_machine.travel(time.time() + seconds, tick=False)


def test_a_service_token_revoked_by_another_worker_is_refused_here_within_the_second(api_client):
    issued = service_token_issue(service="gateway", scopes=["usage:write"])
    assert api_client.post(PROBE, **bearer(issued.token)).status_code == 201

    ServiceToken.objects.filter(pk=issued.record.pk).update(revoked_at=timezone.now())
    cache.set(service_token_cache_key(str(issued.record.pk)), 0)

    assert api_client.post(PROBE, **bearer(issued.token)).status_code == 201  # remembered, no round trip
    with later(1.5):
        refused = api_client.post(PROBE, **bearer(issued.token))
    assert refused.status_code == 401
    assert refused.json()["code"] == "token_revoked"


def test_a_user_deactivated_by_another_worker_cannot_read_credits_here_after_the_second(user, user_client):
    assert user_client.get("/api/v1/me/credits/").status_code == 200

    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    cache.delete(f"auth:active-user:{user.pk}")

    assert user_client.get("/api/v1/me/credits/").status_code == 200
    with later(1.5):
        refused = user_client.get("/api/v1/me/credits/")
    assert refused.status_code == 401


def test_a_price_book_version_bumped_by_another_worker_is_loaded_here_after_the_second():
    loaded = pricing_book()
    cache.set(PRICING_VERSION_KEY, "bumped-by-another-worker")

    assert pricing_book() is loaded
    with later(1.5):
        assert pricing_book() is not loaded
