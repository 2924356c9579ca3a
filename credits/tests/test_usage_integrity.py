"""What usage recording writes, and never writes: 64-bit counts and durations, values refused before
anything is written, one event's failure kept to that event, a 402 that writes nothing, and a shown
balance without expired grants."""

import json
from datetime import timedelta
from uuid import UUID

import pytest
import time_machine
from django.utils import timezone

from billing_project.parsers import text_problems
from credits.models import (
    CreditDeductionLedger,
    TokenUsageLedger,
    UserCreditBalance,
)
from credits.tests.conftest import fund, usage_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]

RECORD = "/api/v1/usage/record/"
BATCH = "/api/v1/usage/record-batch/"
ME_CREDITS = "/api/v1/me/credits/"


def rows() -> tuple[int, int, int]:
    return (
        TokenUsageLedger.objects.count(),
        CreditDeductionLedger.objects.count(),
        UserCreditBalance.objects.count(),
    )


def test_counts_and_durations_beyond_32_bits_are_recorded_in_a_batch(service_client, user, other_user):
    # given events valid per the schema whose sums and durations overflow 32-bit columns
    fund(user, 1_000_000)
    fund(other_user, 1_000)
    started = timezone.now() - timedelta(days=26)
    huge = usage_event(
        user, model="gemini-2-0-flash", provider="google", input_tokens=1_500_000_000, output_tokens=1_000_000_000
    )
    long_running = usage_event(
        user,
        model="gemini-2-0-flash",
        provider="google",
        input_tokens=10,
        output_tokens=10,
        request_started_at=started.isoformat(),
        request_completed_at=(started + timedelta(days=25)).isoformat(),
    )
    events = [usage_event(other_user), huge, long_running]

    response = service_client.post(BATCH, {"events": events}, format="json")

    # then every event is recorded: 2.5e9 tokens and 2.16e9 ms fit
    assert response.status_code == 200
    assert [result["status"] for result in response.json()["results"]] == [201, 201, 201]
    recorded = TokenUsageLedger.objects.get(request_id=huge["request_id"])
    assert (recorded.input_tokens, recorded.output_tokens, recorded.total_tokens) == (
        1_500_000_000,
        1_000_000_000,
        2_500_000_000,
    )
    assert TokenUsageLedger.objects.get(request_id=long_running["request_id"]).processing_time_ms == 25 * 86_400_000


def test_a_nul_character_is_a_400_naming_the_field_and_writes_nothing(service_client, user):
    fund(user, 1000)
    before = rows()

    response = service_client.post(RECORD, usage_event(user, region="eu\x00west"), format="json")

    assert response.status_code == 400
    assert response.json()["errors"]["region"] == ["NUL characters are not accepted."]
    assert rows() == before


def test_a_bad_event_in_a_batch_is_its_own_result_and_the_others_are_recorded(service_client, user, other_user):
    # given a batch whose middle event carries a NUL and whose last one lasts longer than 31 days
    fund(user, 1000)
    fund(other_user, 1000)
    started = timezone.now() - timedelta(days=40)
    events = [
        usage_event(other_user),
        usage_event(user, model="gpt-4o\x00"),
        usage_event(
            user,
            request_started_at=started.isoformat(),
            request_completed_at=(started + timedelta(days=32)).isoformat(),
        ),
        usage_event(user),
    ]

    response = service_client.post(BATCH, {"events": events}, format="json")

    # then the batch answers 200, each bad event with its own 400, and the good ones are recorded
    assert response.status_code == 200
    results = response.json()["results"]
    assert [result["status"] for result in results] == [201, 400, 400, 201]
    assert list(results[1]["errors"]) == ["model"]
    assert list(results[2]["errors"]) == ["request_completed_at"]
    assert set(TokenUsageLedger.objects.values_list("request_id", flat=True)) == {
        UUID(events[0]["request_id"]),
        UUID(events[3]["request_id"]),
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"service_tier": "\ud800"}, "service_tier"),
        ({"request_type": "chat\x00"}, "request_type"),
        ({"fee_units": {"\ud800": 1}}, "fee_units.\ufffd"),
        ({"request_id": "\ud800"}, "request_id"),
    ],
    ids=["surrogate_service_tier", "nul_request_type", "surrogate_fee_name", "surrogate_request_id"],
)
def test_unstorable_text_in_a_field_that_echoes_its_value_is_that_batch_events_own_400(
    service_client, user, other_user, changes, field
):
    # given a batch whose middle event carries text no response can encode or no column can hold
    fund(user, 1000)
    fund(other_user, 1000)
    events = [usage_event(other_user), usage_event(user, **changes), usage_event(user)]

    response = service_client.generic("POST", BATCH, json.dumps({"events": events}), content_type="application/json")

    # then that event alone is refused naming the field, the others are recorded, and the answer echoes
    # none of the text
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [(result["status"], result.get("code")) for result in results] == [
        (201, None),
        (400, "validation_error"),
        (201, None),
    ]
    assert list(results[1]["errors"]) == [field]
    assert not text_problems(response.json())
    assert set(TokenUsageLedger.objects.values_list("request_id", flat=True)) == {
        UUID(events[0]["request_id"]),
        UUID(events[2]["request_id"]),
    }


def test_a_402_writes_nothing_not_even_the_expiry_of_overdue_grants(service_client, user):
    # given a grant past its expiry (the expiry job has not run) and 30 live credits
    fund(user, 500, expires_at=timezone.now() + timedelta(minutes=1))
    fund(user, 30)
    balance_before = UserCreditBalance.objects.get(user=user).amount

    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        response = service_client.post(RECORD, usage_event(user), format="json")

    # then 70 credits are refused against the 30 spendable, and no ledger row was written
    assert response.status_code == 402
    assert (response.json()["available"], response.json()["required"]) == (30, 70)
    assert not CreditDeductionLedger.objects.filter(reason="expiration").exists()
    assert UserCreditBalance.objects.get(user=user).amount == balance_before == 530
    assert TokenUsageLedger.objects.count() == 0


def test_a_402_on_first_use_does_not_create_the_balance_row(service_client, user):
    response = service_client.post(RECORD, usage_event(user), format="json")

    assert response.status_code == 402
    assert not UserCreditBalance.objects.filter(user=user).exists()


def test_a_refused_batch_user_writes_nothing_while_another_user_is_recorded(service_client, user, other_user):
    fund(user, 500, expires_at=timezone.now() + timedelta(minutes=1))
    fund(other_user, 1000)

    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        response = service_client.post(BATCH, {"events": [usage_event(user), usage_event(other_user)]}, format="json")

    assert [result["status"] for result in response.json()["results"]] == [402, 201]
    assert list(CreditDeductionLedger.objects.values_list("user_id", "reason")) == [(other_user.pk, "inference")]


def test_me_credits_never_counts_a_grant_past_its_expiry_before_the_job_runs(user_client, user):
    fund(user, 100)
    fund(user, 40, expires_at=timezone.now() + timedelta(seconds=30))

    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        body = user_client.get(ME_CREDITS).json()

    assert body["balance"] == 100
    assert [grant["remaining"] for grant in body["grants"]] == [100]
    assert UserCreditBalance.objects.get(user=user).amount == 140  # the job has not run


def test_check_never_counts_a_grant_past_its_expiry(service_client, user):
    fund(user, 100)
    fund(user, 40, expires_at=timezone.now() + timedelta(seconds=30))

    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        body = service_client.post(
            "/api/v1/usage/check/", {"user_id": user.pk, "estimated_credits": 120}, format="json"
        ).json()

    assert body == {
        "allowed": False,
        "reason": "insufficient_credits",
        "balance": 100,
        "available": 100,
        "budget_available": None,
    }
