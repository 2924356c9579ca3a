"""Reservations for streaming calls: reserve, capture (whole, over, partial), release, expiry."""

import uuid
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from credits.models import CreditDeductionLedger, CreditHold, TokenUsageLedger, UserCreditBalance
from credits.services import holds_expire
from credits.tests.conftest import fund, usage_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]

RESERVE = "/api/v1/usage/reserve/"
RELEASE = "/api/v1/usage/release/"
RECORD = "/api/v1/usage/record/"
CHECK = "/api/v1/usage/check/"


def reserve(client, user, amount, **extra):
    return client.post(RESERVE, {"user_id": user.pk, "estimated_credits": amount, **extra}, format="json")


def test_reserve_holds_credits_that_nobody_else_can_spend(service_client, user):
    fund(user, 100)

    held = reserve(service_client, user, 60)
    check = service_client.post(CHECK, {"user_id": user.pk, "estimated_credits": 41}, format="json")
    record = service_client.post(RECORD, usage_event(user), format="json")  # 70 > 100 - 60

    assert held.status_code == 201
    body = held.json()
    assert (body["held"], body["available"], body["status"]) == (60, 40, "held")
    assert check.json() == {
        "allowed": False,
        "reason": "insufficient_credits",
        "balance": 100,
        "available": 40,
        "budget_available": None,
    }
    assert record.status_code == 402
    assert record.json()["available"] == 40
    assert UserCreditBalance.objects.get(user=user).amount == 100


def test_reserve_beyond_the_available_credits_is_a_402(service_client, user):
    fund(user, 100)
    reserve(service_client, user, 80)

    response = reserve(service_client, user, 21)

    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_credits"
    assert CreditHold.objects.count() == 1


def test_reserve_with_the_same_hold_id_is_idempotent(service_client, user):
    fund(user, 100)
    hold_id = str(uuid.uuid4())

    first = reserve(service_client, user, 30, hold_id=hold_id)
    again = reserve(service_client, user, 30, hold_id=hold_id)

    assert (first.status_code, again.status_code) == (201, 200)
    assert CreditHold.objects.get().hold_id == uuid.UUID(hold_id)


def test_record_with_a_hold_captures_the_actual_cost_and_frees_the_rest(service_client, user):
    fund(user, 200)
    hold_id = reserve(service_client, user, 100).json()["hold_id"]

    response = service_client.post(RECORD, usage_event(user, hold_id=hold_id), format="json")

    assert response.status_code == 201
    assert (response.json()["credits_deducted"], response.json()["status"]) == (70, "success")
    hold = CreditHold.objects.get()
    assert (hold.status, hold.captured_amount) == ("captured", 70)
    check = service_client.post(CHECK, {"user_id": user.pk, "estimated_credits": 130}, format="json")
    assert check.json() == {"allowed": True, "reason": None, "balance": 130, "available": 130, "budget_available": None}


def test_a_repeat_naming_a_hold_its_first_record_went_without_frees_the_hold(service_client, user):
    # a retried call: its first record arrived without the hold, its repeat names the hold
    fund(user, 200)
    hold_id = reserve(service_client, user, 100).json()["hold_id"]
    event = usage_event(user)
    first = service_client.post(RECORD, event, format="json")

    again = service_client.post(RECORD, {**event, "hold_id": hold_id}, format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["credits_deducted"] == 70
    assert CreditHold.objects.get().status == "released"
    assert TokenUsageLedger.objects.count() == CreditDeductionLedger.objects.count() == 1
    check = service_client.post(CHECK, {"user_id": user.pk, "estimated_credits": 130}, format="json")
    assert (check.json()["balance"], check.json()["available"]) == (130, 130)


def test_a_repeat_of_the_record_that_captured_its_hold_changes_nothing(service_client, user):
    fund(user, 200)
    hold_id = reserve(service_client, user, 100).json()["hold_id"]
    event = usage_event(user, hold_id=hold_id)
    service_client.post(RECORD, event, format="json")

    again = service_client.post(RECORD, event, format="json")

    assert again.status_code == 200
    hold = CreditHold.objects.get()
    assert (hold.status, hold.captured_amount) == ("captured", 70)
    assert UserCreditBalance.objects.get(user=user).amount == 130


def test_capture_may_exceed_the_hold_when_the_balance_allows(service_client, user):
    fund(user, 200)
    hold_id = reserve(service_client, user, 10).json()["hold_id"]

    response = service_client.post(RECORD, usage_event(user, hold_id=hold_id), format="json")

    assert (response.json()["credits_deducted"], response.json()["status"]) == (70, "success")


def test_capture_beyond_hold_and_balance_takes_what_they_cover_and_is_partial(service_client, user):
    fund(user, 100)
    hold_id = reserve(service_client, user, 40).json()["hold_id"]
    reserve(service_client, user, 50)  # another call's hold leaves this one 40 + 10

    response = service_client.post(RECORD, usage_event(user, hold_id=hold_id), format="json")

    assert response.status_code == 201
    assert (response.json()["credits_deducted"], response.json()["status"]) == (50, "partial")
    usage = TokenUsageLedger.objects.get()
    assert (usage.status, usage.credits_deducted, usage.hold_id) == ("partial", 50, uuid.UUID(hold_id))
    assert UserCreditBalance.objects.get(user=user).amount == 50


def test_a_captured_hold_cannot_be_captured_again(service_client, user):
    fund(user, 200)
    hold_id = reserve(service_client, user, 100).json()["hold_id"]
    service_client.post(RECORD, usage_event(user, hold_id=hold_id), format="json")

    response = service_client.post(RECORD, usage_event(user, hold_id=hold_id), format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "hold_already_captured"
    assert CreditDeductionLedger.objects.count() == 1


def test_capturing_another_users_hold_is_refused(service_client, user, other_user):
    fund(user, 200)
    fund(other_user, 200)
    hold_id = reserve(service_client, other_user, 100).json()["hold_id"]

    response = service_client.post(RECORD, usage_event(user, hold_id=hold_id), format="json")

    assert response.status_code == 422
    assert response.json()["code"] == "unknown_hold"


def test_release_frees_the_held_credits(service_client, user):
    fund(user, 100)
    hold_id = reserve(service_client, user, 100).json()["hold_id"]

    released = service_client.post(RELEASE, {"hold_id": hold_id}, format="json")
    again = service_client.post(RELEASE, {"hold_id": hold_id}, format="json")

    assert (released.status_code, released.json()["status"]) == (200, "released")
    assert again.status_code == 200
    assert service_client.post(RECORD, usage_event(user), format="json").status_code == 201


def test_releasing_an_unknown_hold_is_a_404(service_client):
    response = service_client.post(RELEASE, {"hold_id": str(uuid.uuid4())}, format="json")

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_hold"


def test_stale_holds_stop_counting_and_the_job_marks_them_expired(service_client, user, settings):
    settings.CREDIT_HOLD_TTL = timedelta(minutes=15)
    fund(user, 100)
    reserve(service_client, user, 100)

    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        check = service_client.post(CHECK, {"user_id": user.pk, "estimated_credits": 100}, format="json")
        expired = holds_expire()

    assert check.json()["available"] == 100
    assert expired == 1
    assert CreditHold.objects.get().status == "expired"
