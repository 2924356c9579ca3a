import uuid
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from conftest import run_concurrently
from credits.models import (
    CreditAllocation,
    CreditDeductionLedger,
    CreditHold,
    UserCreditBalance,
    UserCreditSource,
)
from credits.services import credit_grant, holds_expire, pricing_catalog_seed
from credits.services.ledger import ledger_figures
from credits.tests.conftest import fund, usage_event

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_ten_parallel_grants_give_exactly_ten_times_the_amount(user):
    results = run_concurrently(
        lambda n: credit_grant(user=user, amount=500, source="bonus", reason=f"bonus {n}"), list(range(10))
    )

    assert all(not isinstance(result, Exception) for result in results), results
    assert UserCreditBalance.objects.get(user=user).amount == 5000
    assert CreditAllocation.objects.filter(user=user).count() == 10
    assert sorted(result.balance_after for result in results) == list(range(500, 5001, 500))


def test_ten_parallel_allocations_of_one_period_allocate_once(user):
    now = timezone.now()
    subscription_id = uuid.uuid4()

    results = run_concurrently(
        lambda _: credit_grant(
            user=user, amount=20000, source="subscription", subscription_id=subscription_id, period_start=now
        ),
        list(range(10)),
    )

    assert all(not isinstance(result, Exception) for result in results), results
    assert sum(result.created for result in results) == 1
    assert UserCreditBalance.objects.get(user=user).amount == 20000
    assert UserCreditSource.objects.filter(user=user).count() == 1


def _service_client():
    from rest_framework.test import APIClient

    from billing_project.service_tokens import service_token_issue
    from conftest import bearer

    client = APIClient()
    client.credentials(
        **bearer(service_token_issue(service="gateway", scopes=["usage:write"], lifetime=timedelta(hours=1)).token)
    )
    return client


def _record_many(user, request_ids):
    client = _service_client()
    return [
        client.post("/api/v1/usage/record/", usage_event(user, request_id=str(request_id)), format="json").status_code
        for request_id in request_ids
    ]


def test_twenty_threads_recording_on_one_balance_spend_exactly_what_it_covers(user):
    # given a balance covering exactly 300 requests of 70 credits
    pricing_catalog_seed()
    fund(user, 300 * 70)
    batches = [[uuid.uuid4() for _ in range(25)] for _ in range(20)]

    # when 20 threads each send 25 requests
    statuses = [
        status for result in run_concurrently(lambda ids: _record_many(user, ids), batches) for status in result
    ]

    # then exactly 300 succeed, the rest are refused, and the balance is exactly spent
    assert statuses.count(201) == 300
    assert statuses.count(402) == 200
    assert UserCreditBalance.objects.get(user=user).amount == 0
    deductions = CreditDeductionLedger.objects.filter(user=user).order_by("balance_before")
    assert deductions.count() == 300
    assert all(row.balance_after >= 0 for row in deductions)
    assert [row.balance_after for row in deductions] == list(range(0, 300 * 70, 70))
    assert all(figures.problems == [] for figures in ledger_figures(user_ids=[user.pk]))


def test_the_same_request_id_from_ten_threads_deducts_once(user):
    pricing_catalog_seed()
    fund(user, 1000)
    request_id = uuid.uuid4()

    statuses = run_concurrently(lambda _: _record_many(user, [request_id])[0], list(range(10)))

    assert sorted(statuses) == [200] * 9 + [201]
    assert CreditDeductionLedger.objects.filter(user=user).count() == 1
    assert UserCreditBalance.objects.get(user=user).amount == 930


def _reserve(user, estimate):
    client = _service_client()
    reserved = client.post("/api/v1/usage/reserve/", {"user_id": user.pk, "estimated_credits": estimate}, format="json")
    return reserved.status_code, reserved.json().get("hold_id")


def _capture(user, hold_id):
    recorded = _service_client().post("/api/v1/usage/record/", usage_event(user, hold_id=hold_id), format="json")
    return recorded.status_code, recorded.json()["credits_deducted"]


def test_twenty_threads_reserving_then_capturing_never_spend_more_than_the_balance(user):
    # given 1,000 credits and 20 streaming calls of 70 credits, each reserving 60 first
    pricing_catalog_seed()
    fund(user, 1000)

    # the reservations race each other, then the captures race each other (and the leftover balance)
    reservations = run_concurrently(lambda _: _reserve(user, 60), list(range(20)))
    hold_ids = [hold_id for status, hold_id in reservations if status == 201]
    results = run_concurrently(lambda hold_id: _capture(user, hold_id), hold_ids)

    # then 16 holds fit (16 x 60 = 960), the rest are refused, and what is captured stays within the balance
    assert [status for status, _ in reservations].count(402) == 4
    assert len(hold_ids) == 16
    captured = sum(amount for _, amount in results)
    assert captured <= 1000
    assert UserCreditBalance.objects.get(user=user).amount == 1000 - captured
    assert CreditHold.objects.filter(status="held").count() == 0
    for deduction in CreditDeductionLedger.objects.filter(user=user):
        assert sum(row.amount for row in deduction.consumptions.all()) == deduction.amount
    assert all(figures.problems == [] for figures in ledger_figures(user_ids=[user.pk]))


def test_holds_that_are_not_captured_expire_and_free_their_credits(user, settings):
    pricing_catalog_seed()
    fund(user, 1000)
    client = _service_client()
    run_concurrently(
        lambda _: _service_client().post(
            "/api/v1/usage/reserve/", {"user_id": user.pk, "estimated_credits": 100}, format="json"
        ),
        list(range(10)),
    )
    assert (
        client.post("/api/v1/usage/check/", {"user_id": user.pk, "estimated_credits": 1}, format="json").json()[
            "available"
        ]
        == 0
    )

    with time_machine.travel(timezone.now() + settings.CREDIT_HOLD_TTL + timedelta(seconds=1)):
        assert holds_expire() == 10
        available = client.post(
            "/api/v1/usage/check/", {"user_id": user.pk, "estimated_credits": 1}, format="json"
        ).json()["available"]

    assert available == 1000
