"""me/credits, me/usage (with lineage) and me/usage/daily: what a customer sees."""

from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from credits import ledger_sql
from credits.models import TokenUsageDailySummary
from credits.tests.conftest import fund, usage_event
from credits.tests.factories import TokenUsageLedgerFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]

RECORD = "/api/v1/usage/record/"


def test_me_credits_shows_the_balance_and_the_live_grants_in_spending_order(user_client, user):
    expiry = timezone.now() + timedelta(days=3)
    fund(user, 100)
    fund(user, 40, expires_at=expiry)

    response = user_client.get("/api/v1/me/credits/")

    assert response.status_code == 200
    body = response.json()
    assert body["balance"] == 140
    assert [(grant["source"], grant["remaining"]) for grant in body["grants"]] == [("bonus", 40), ("bonus", 100)]
    assert body["grants"][0]["expires_at"] is not None and body["grants"][1]["expires_at"] is None


def test_me_credits_from_the_cache_is_the_same_json_body_read_with_no_query(
    user_client, user, django_assert_num_queries
):
    fund(user, 100)
    first = user_client.get("/api/v1/me/credits/")

    with django_assert_num_queries(0):
        again = user_client.get("/api/v1/me/credits/")
    indented = user_client.get("/api/v1/me/credits/", HTTP_ACCEPT="application/json; indent=4")

    assert again.status_code == first.status_code == indented.status_code == 200
    assert again["Content-Type"] == first["Content-Type"] == "application/json"
    assert again.content == first.content
    assert first.json()["balance"] == 100
    assert indented.content.startswith(b"{\n    ") and indented.json() == first.json()


def test_me_usage_lists_requests_with_the_grants_that_paid(service_client, user_client, user):
    expiring = fund(user, 30, expires_at=timezone.now() + timedelta(days=1)).allocation.grants.get()
    lasting = fund(user, 100).allocation.grants.get()
    event = usage_event(user)
    service_client.post(RECORD, event, format="json")

    response = user_client.get("/api/v1/me/usage/")

    assert response.status_code == 200
    (row,) = response.json()["results"]
    assert (row["request_id"], row["credits_deducted"], row["provider"], row["model_name"]) == (
        event["request_id"],
        70,
        "openai",
        "gpt-4o",
    )
    assert [(paid["grant_id"], paid["amount"]) for paid in row["paid_by"]] == [
        (str(expiring.pk), 30),
        (str(lasting.pk), 40),
    ]


def test_me_usage_filters_by_model_and_provider_and_pages_by_cursor(service_client, user_client, user):
    fund(user, 10_000)
    for model, provider in [("gpt-4o", "openai")] * 3 + [("claude-3-5-sonnet", "anthropic")]:
        service_client.post(RECORD, usage_event(user, model=model, provider=provider), format="json")

    claude = user_client.get("/api/v1/me/usage/", {"model": "claude-3-5-sonnet"}).json()["results"]
    openai = user_client.get("/api/v1/me/usage/", {"provider": "openai"}).json()["results"]
    first = user_client.get("/api/v1/me/usage/", {"page_size": 2}).json()
    second = user_client.get(first["next"]).json()

    assert [row["model_name"] for row in claude] == ["claude-3-5-sonnet"]
    assert len(openai) == 3
    assert len(first["results"]) == 2 and len(second["results"]) == 2
    seen = {row["request_id"] for row in first["results"] + second["results"]}
    assert len(seen) == 4


def test_me_usage_rejects_a_malformed_date_filter(user_client):
    response = user_client.get("/api/v1/me/usage/", {"date_from": "yesterday"})

    assert response.status_code == 400
    assert "date_from" in response.json()["errors"]


def test_me_usage_shows_only_the_callers_usage(service_client, user_client, user, other_user):
    fund(other_user, 1000)
    service_client.post(RECORD, usage_event(other_user), format="json")

    assert user_client.get("/api/v1/me/usage/").json()["results"] == []


def test_me_usage_daily_totals_today(service_client, user_client, user):
    fund(user, 1000)
    for _ in range(2):
        service_client.post(RECORD, usage_event(user), format="json")

    response = user_client.get("/api/v1/me/usage/daily/")

    assert response.status_code == 200
    (day,) = response.json()
    assert day == {
        "day": timezone.now().date().isoformat(),
        "requests": 2,
        "input_tokens": 2000,
        "output_tokens": 4000,
        "credits": 140,
    }


def test_me_endpoints_need_a_user(api_client, service_client):
    assert api_client.get("/api/v1/me/credits/").status_code == 401
    assert service_client.get("/api/v1/me/credits/").status_code == 403


ME_CREDITS = "/api/v1/me/credits/"


def test_me_credits_shows_a_change_made_after_it_was_read(
    service_client, user_client, user, django_capture_on_commit_callbacks
):
    fund(user, 1000)
    assert user_client.get(ME_CREDITS).json()["balance"] == 1000

    with django_capture_on_commit_callbacks(execute=True):
        service_client.post(RECORD, usage_event(user), format="json")

    assert user_client.get(ME_CREDITS).json()["balance"] == 930


def test_me_credits_never_keeps_a_balance_read_before_a_change_committed(
    user_client, user, monkeypatch, django_capture_on_commit_callbacks
):
    # given a reader that reads the balance, then a grant commits before the reader stores it
    fund(user, 1000)
    read = ledger_sql.balance_and_live_grants

    def read_then_grant(user_id, now):
        figures = read(user_id, now)
        with django_capture_on_commit_callbacks(execute=True):
            fund(user, 500)
        return figures

    monkeypatch.setattr(ledger_sql, "balance_and_live_grants", read_then_grant)
    assert user_client.get(ME_CREDITS).json()["balance"] == 1000
    monkeypatch.undo()

    # then the next read does not serve what that reader stored
    assert user_client.get(ME_CREDITS).json()["balance"] == 1500


def test_me_credits_drops_a_grant_when_it_expires_even_when_cached(user_client, user, settings):
    settings.CACHES = {**settings.CACHES, "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    fund(user, 100)
    fund(user, 40, expires_at=timezone.now() + timedelta(seconds=30))
    assert len(user_client.get(ME_CREDITS).json()["grants"]) == 2

    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        grants = user_client.get(ME_CREDITS).json()["grants"]

    assert [grant["remaining"] for grant in grants] == [100]


def test_me_credits_makes_no_query_for_a_user_known_to_be_active(user_client, user, django_assert_num_queries):
    fund(user, 100)
    user_client.get(ME_CREDITS)

    with django_assert_num_queries(0):
        response = user_client.get(ME_CREDITS)

    assert response.json()["balance"] == 100


def test_me_credits_served_from_the_cache_is_the_body_the_database_read_gave(
    user_client, user, django_assert_num_queries
):
    fund(user, 100)
    fund(user, 40, expires_at=timezone.now() + timedelta(days=3))
    user_client.put("/api/v1/me/credits/budget/", {"monthly_credits": 500, "hard_limit": True}, format="json")
    read = user_client.get(ME_CREDITS)

    with django_assert_num_queries(0):
        cached = user_client.get(ME_CREDITS)

    assert cached.content == read.content
    assert read.json()["grants"][0]["expires_at"].endswith("Z")
    assert read.json()["budget"]["monthly_credits"] == 500


def test_me_credits_refuses_a_user_deactivated_after_a_read(user_client, user, django_capture_on_commit_callbacks):
    assert user_client.get(ME_CREDITS).status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        user.is_active = False
        user.save()

    response = user_client.get(ME_CREDITS)
    assert (response.status_code, response.json()["code"]) == (401, "user_inactive")


def test_me_credits_refuses_a_deleted_user(user_client, user, django_capture_on_commit_callbacks):
    assert user_client.get(ME_CREDITS).status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        user.delete()

    response = user_client.get(ME_CREDITS)
    assert (response.status_code, response.json()["code"]) == (401, "user_not_found")


def test_me_credits_refuses_a_service_token(service_client):
    assert service_client.get(ME_CREDITS).status_code == 403


def test_a_row_recorded_before_the_flat_fields_had_one_meaning_counts_its_cache_tokens_once(
    service_client, user_client, user
):
    # given: a row of the old meaning (cache tokens beside input_tokens) and one of today's (inside it)
    TokenUsageLedgerFactory(
        user=user, usage_format="", input_tokens=700, cached_input_tokens=200, cache_write_tokens=100
    )
    fund(user, 1000)
    service_client.post(
        RECORD, usage_event(user, input_tokens=1000, cached_input_tokens=200, cache_write_tokens=100), format="json"
    )
    today = timezone.now().date()

    # when
    listed = user_client.get("/api/v1/me/usage/").json()["results"]
    (day,) = user_client.get("/api/v1/me/usage/daily/").json()
    call_command(
        "rollup_usage", "--from", today.isoformat(), "--to", today.isoformat(), "--no-progress", stdout=StringIO()
    )

    # then: both read as 700 uncached, 200 cache read, 100 cache write
    assert [
        (row["breakdown"]["input"], row["breakdown"]["cache_read"], row["breakdown"]["cache_write_5m"])
        for row in listed
    ] == [(700, 200, 100)] * 2
    assert day["input_tokens"] == 2000
    assert TokenUsageDailySummary.objects.get(user=user).total_input_tokens == 2000
