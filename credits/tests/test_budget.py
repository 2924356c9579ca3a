"""Monthly credit budgets: a hard limit refuses usage past it (exactly, under concurrency), soft
thresholds notify once each per month, a new month starts from zero, and users and staff set it."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail

from audit.models import AdminAuditLog
from billing_project.models import Notification
from conftest import bearer, run_concurrently
from credits.api.events import usage_event_parse
from credits.models import CreditHold, TokenUsageLedger, UserCreditBalance
from credits.selectors import pricing_book
from credits.services import budget_set, deduction_reverse, usage_record
from credits.services.ledger import ledger_figures
from credits.tests.conftest import fund, usage_event

RECORD = "/api/v1/usage/record/"
BATCH = "/api/v1/usage/record-batch/"
RESERVE = "/api/v1/usage/reserve/"
CHECK = "/api/v1/usage/check/"
ME_CREDITS = "/api/v1/me/credits/"
ME_BUDGET = "/api/v1/me/credits/budget/"
COST = 70  # usage_event(): 1000 in + 2000 out on gpt-4o at the free tier's margin

pytestmark = pytest.mark.usefixtures("price_catalog")


@pytest.fixture
def gateway(service_client):
    return service_client


def budget_notifications(user) -> list[str]:
    return sorted(
        Notification.objects.filter(user=user, kind="credits.budget_threshold").values_list("occurrence", flat=True)
    )


def spent(user) -> int:
    return UserCreditBalance.objects.get(user=user).budget_spent


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_forty_parallel_records_against_a_hard_budget_for_twenty_five_spend_exactly_the_budget(user):
    # given a large balance and a hard budget covering exactly 25 requests
    from credits.tests.test_concurrency import _service_client

    fund(user, 100_000)
    budget_set(user_id=user.pk, monthly_credits=25 * COST, hard_limit=True)

    # when 40 requests are recorded at once
    def record(_):
        response = _service_client().post(RECORD, usage_event(user), format="json")
        return response.status_code, response.json().get("code")

    outcomes = run_concurrently(record, list(range(40)))

    # then exactly 25 are recorded and 15 refused for the budget, with a balance left
    assert sorted(outcomes, key=str) == sorted([(201, None)] * 25 + [(402, "budget_exceeded")] * 15, key=str)
    assert spent(user) == 25 * COST
    assert UserCreditBalance.objects.get(user=user).amount == 100_000 - 25 * COST
    assert TokenUsageLedger.objects.filter(user=user).count() == 25
    assert all(figures.problems == [] for figures in ledger_figures(user_ids=[user.pk]))
    # and each threshold was told once, however many requests crossed it together
    month = datetime.now(UTC).strftime("%Y-%m")
    assert budget_notifications(user) == [f"{user.pk}:{month}:{percent}" for percent in (100, 50, 80)]


@pytest.mark.django_db
def test_record_past_a_hard_budget_answers_402_budget_exceeded_and_writes_nothing(gateway, user):
    fund(user, 10_000)
    budget_set(user_id=user.pk, monthly_credits=100, hard_limit=True)
    gateway.post(RECORD, usage_event(user), format="json")  # 70 of 100

    refused = gateway.post(RECORD, usage_event(user), format="json")

    assert refused.status_code == 402
    assert refused["Content-Type"].startswith("application/problem+json")
    body = refused.json()
    assert (body["code"], body["required"], body["budget_available"]) == ("budget_exceeded", COST, 30)
    assert (spent(user), UserCreditBalance.objects.get(user=user).amount) == (COST, 10_000 - COST)
    assert TokenUsageLedger.objects.filter(user=user).count() == 1


@pytest.mark.django_db
def test_record_batch_refuses_each_event_past_a_hard_budget(gateway, user):
    fund(user, 10_000)
    budget_set(user_id=user.pk, monthly_credits=2 * COST, hard_limit=True)

    response = gateway.post(BATCH, {"events": [usage_event(user) for _ in range(3)]}, format="json")

    results = response.json()["results"]
    assert [result["status"] for result in results] == [201, 201, 402]
    assert results[2]["code"] == "budget_exceeded"
    assert spent(user) == 2 * COST


@pytest.mark.django_db
def test_reserve_and_check_are_refused_past_a_hard_budget_with_holds_counted_against_it(gateway, user):
    # given 10,000 credits, a hard budget of 1,000, 200 spent and 600 held
    fund(user, 10_000)
    budget_set(user_id=user.pk, monthly_credits=1000, hard_limit=True)
    for _ in range(3):
        gateway.post(RECORD, usage_event(user), format="json")  # 210 spent
    assert gateway.post(RESERVE, {"user_id": user.pk, "estimated_credits": 600}, format="json").status_code == 201

    # when more is reserved or checked than the 190 the budget has left
    reserved = gateway.post(RESERVE, {"user_id": user.pk, "estimated_credits": 191}, format="json")
    refused = gateway.post(CHECK, {"user_id": user.pk, "estimated_credits": 191}, format="json")
    allowed = gateway.post(CHECK, {"user_id": user.pk, "estimated_credits": 190}, format="json")

    # then
    assert reserved.status_code == 402
    assert (reserved.json()["code"], reserved.json()["budget_available"]) == ("budget_exceeded", 190)
    assert CreditHold.objects.filter(user=user).count() == 1
    assert refused.json() == {
        "allowed": False,
        "reason": "budget_exceeded",
        "balance": 10_000 - 3 * COST,
        "available": 10_000 - 3 * COST - 600,
        "budget_available": 190,
    }
    assert (allowed.json()["allowed"], allowed.json()["reason"]) == (True, None)


@pytest.mark.django_db
def test_a_capture_past_a_hard_budget_takes_only_what_the_hold_and_budget_cover(gateway, user):
    fund(user, 10_000)
    budget_set(user_id=user.pk, monthly_credits=100, hard_limit=True)
    hold_id = gateway.post(RESERVE, {"user_id": user.pk, "estimated_credits": 50}, format="json").json()["hold_id"]

    captured = gateway.post(
        RECORD, usage_event(user, hold_id=hold_id, output_tokens=4000), format="json"
    )  # 130 credits

    assert captured.status_code == 201
    assert (captured.json()["credits_deducted"], captured.json()["status"]) == (100, "partial")
    assert spent(user) == 100


@pytest.mark.django_db
def test_a_capture_counts_the_other_holds_against_the_budget(gateway, user):
    # given two holds made before a hard budget smaller than both together
    fund(user, 10_000)
    first = gateway.post(RESERVE, {"user_id": user.pk, "estimated_credits": 100}, format="json").json()["hold_id"]
    gateway.post(RESERVE, {"user_id": user.pk, "estimated_credits": 50}, format="json")
    budget_set(user_id=user.pk, monthly_credits=100, hard_limit=True)

    # when the first is captured for its call of 70 credits
    captured = gateway.post(RECORD, usage_event(user, hold_id=first), format="json")

    # then it takes only what the budget leaves beside the other hold
    assert (captured.json()["credits_deducted"], captured.json()["status"]) == (50, "partial")
    assert spent(user) == 50


@pytest.mark.django_db
def test_a_soft_budget_lets_usage_through_and_notifies_each_threshold_once(
    gateway, user, django_capture_on_commit_callbacks
):
    # given a soft budget of 200 credits
    fund(user, 10_000)
    budget_set(user_id=user.pk, monthly_credits=200, hard_limit=False)
    month = datetime.now(UTC).strftime("%Y-%m")

    # when five requests of 70 are recorded (35 %, 70 %, 105 %, 140 %, 175 %)
    with django_capture_on_commit_callbacks(execute=True):
        statuses = [gateway.post(RECORD, usage_event(user), format="json").status_code for _ in range(5)]

    # then all are recorded, and 50 %, then 80 % and 100 % together, are each told once
    assert statuses == [201] * 5
    assert budget_notifications(user) == [f"{user.pk}:{month}:{percent}" for percent in (100, 50, 80)]
    assert sorted(message.subject for message in mail.outbox) == [
        f"You have used {percent} % of your monthly credit budget" for percent in (100, 50, 80)
    ]
    assert all(message.to == [user.email] for message in mail.outbox)
    html = mail.outbox[0].alternatives[0][0]
    assert "soft limit" in mail.outbox[0].body and "<p>" in html
    notification = Notification.objects.get(occurrence=f"{user.pk}:{month}:80")
    assert notification.context["spent_this_month"] == 210 and notification.event.type == "credits.budget_threshold"


@pytest.mark.django_db
def test_a_new_month_starts_the_budget_from_zero(gateway, service_token, user):
    # given a hard budget reached in January
    gateway.credentials(**bearer(service_token("usage:write", lifetime=timedelta(days=90))))
    fund(user, 10_000)
    with time_machine.travel(datetime(2027, 1, 31, 23, 0, tzinfo=UTC), tick=False):
        budget_set(user_id=user.pk, monthly_credits=COST, hard_limit=True)
        assert gateway.post(RECORD, usage_event(user), format="json").status_code == 201
        assert gateway.post(RECORD, usage_event(user), format="json").status_code == 402

    # when February comes
    with time_machine.travel(datetime(2027, 2, 1, 0, 0, 1, tzinfo=UTC), tick=False):
        before = gateway.post(CHECK, {"user_id": user.pk, "estimated_credits": COST}, format="json").json()
        recorded = gateway.post(RECORD, usage_event(user), format="json")

    # then the budget is whole again, and February's thresholds are told anew
    assert before["allowed"] is True and before["budget_available"] == COST
    assert recorded.status_code == 201
    balance = UserCreditBalance.objects.get(user=user)
    assert (balance.budget_month, balance.budget_spent) == ("2027-02", COST)
    assert f"{user.pk}:2027-02:100" in budget_notifications(user)
    assert f"{user.pk}:2027-01:100" in budget_notifications(user)


@pytest.mark.django_db
def test_a_reversal_gives_its_credits_back_to_the_budget_of_its_own_month_only(gateway, user, staff_user):
    fund(user, 10_000)
    with time_machine.travel(datetime(2027, 3, 15, tzinfo=UTC), tick=False):
        budget_set(user_id=user.pk, monthly_credits=1000, hard_limit=True)
        march = usage_record(event=usage_event_parse(usage_event(user))[0]).usage.deduction
    with time_machine.travel(datetime(2027, 4, 2, tzinfo=UTC), tick=False):
        april = usage_record(event=usage_event_parse(usage_event(user))[0]).usage.deduction
        deduction_reverse(deduction_id=march.pk, reason="last month's outage", actor=staff_user)
        assert spent(user) == COST  # March's spend stays March's
        deduction_reverse(deduction_id=april.pk, reason="this month's outage", actor=staff_user)
        assert spent(user) == 0


@pytest.mark.django_db
def test_people_set_and_read_their_budget_and_see_it_in_me_credits(
    user_client, gateway, user, django_capture_on_commit_callbacks
):
    fund(user, 1000)
    assert user_client.get(ME_CREDITS).json()["budget"] is None

    with django_capture_on_commit_callbacks(execute=True):
        put = user_client.put(ME_BUDGET, {"monthly_credits": 500, "hard_limit": True}, format="json")
        gateway.post(RECORD, usage_event(user), format="json")

    expected = {
        "monthly_credits": 500,
        "hard_limit": True,
        "spent_this_month": COST,
        "remaining": 500 - COST,
        "thresholds_notified": [],
    }
    assert put.status_code == 200
    assert put.json() == {**expected, "spent_this_month": 0, "remaining": 500}
    assert user_client.get(ME_BUDGET).json() == expected
    assert user_client.get(ME_CREDITS).json()["budget"] == expected

    with django_capture_on_commit_callbacks(execute=True):
        removed = user_client.put(ME_BUDGET, {"monthly_credits": None}, format="json")
    assert removed.json()["monthly_credits"] is None and removed.json()["spent_this_month"] == COST
    assert user_client.get(ME_CREDITS).json()["budget"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"monthly_credits": 0}, 400, "validation_error", "monthly_credits"),
        ({"monthly_credits": "lots"}, 400, "validation_error", "monthly_credits"),
        ({}, 400, "validation_error", "monthly_credits"),
        ({"monthly_credits": 100, "hard_limit": "maybe"}, 400, "validation_error", "hard_limit"),
        ({"monthly_credits": None, "hard_limit": True}, 422, "hard_limit_without_budget", None),
    ],
)
def test_an_invalid_budget_is_a_problem_and_changes_nothing(user_client, user, body, status, code, field):
    budget_set(user_id=user.pk, monthly_credits=300, hard_limit=False)

    response = user_client.put(ME_BUDGET, body, format="json")

    assert response.status_code == status
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    if field:
        assert field in response.json()["errors"]
    balance = UserCreditBalance.objects.get(user=user)
    assert (balance.budget_monthly_credits, balance.budget_hard_limit) == (300, False)


@pytest.mark.django_db
def test_staff_set_a_users_budget_with_an_audit_row(staff_client, user_client, user):
    url = f"/api/v1/admin/credits/budget/{user.pk}/"

    response = staff_client.put(url, {"monthly_credits": 800, "hard_limit": True}, format="json")
    missing = staff_client.put("/api/v1/admin/credits/budget/999999/", {"monthly_credits": 800}, format="json")
    forbidden = user_client.put(url, {"monthly_credits": 1}, format="json")

    assert response.status_code == 200 and response.json()["monthly_credits"] == 800
    assert (missing.status_code, missing.json()["code"]) == (404, "unknown_user")
    assert forbidden.status_code == 403
    audit = AdminAuditLog.objects.get(resource_type="credits.usercreditbalance", resource_id=str(user.pk))
    assert audit.previous_value == {"monthly_credits": None, "hard_limit": False}
    assert audit.new_value == {"user_id": user.pk, "monthly_credits": 800, "hard_limit": True}
    assert UserCreditBalance.objects.get(user=user).budget_monthly_credits == 800


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("hard_limit", [None, False, True])
def test_recording_against_a_budget_costs_no_extra_query(user, hard_limit, django_assert_num_queries):
    # given a user without a budget (as before budgets existed), with a soft one, or with a hard one
    fund(user, 100_000)
    if hard_limit is not None:
        budget_set(user_id=user.pk, monthly_credits=50_000, hard_limit=hard_limit)
    pricing_book()
    event, _ = usage_event_parse(usage_event(user))

    # then the same four queries as without: the transaction, the reads under the lock, the writes, the end
    with django_assert_num_queries(4):
        usage_record(event=event)
    assert spent(user) == COST


@pytest.mark.django_db
def test_a_request_refused_for_the_budget_notifies_nothing(gateway, user):
    fund(user, 1000)
    budget_set(user_id=user.pk, monthly_credits=COST - 1, hard_limit=True)

    refused = gateway.post(RECORD, usage_event(user, request_id=str(uuid.uuid4())), format="json")

    assert refused.status_code == 402
    assert Notification.objects.count() == 0


@pytest.mark.django_db
def test_a_budget_set_on_a_row_that_has_not_counted_this_month_counts_the_months_usage_from_the_ledger(
    gateway, user, staff_user
):
    # given this month's usage recorded before budgets counted it (two requests, one reversed)
    fund(user, 1000)
    gateway.post(RECORD, usage_event(user), format="json")
    reversed_deduction = usage_record(event=usage_event_parse(usage_event(user))[0]).usage.deduction
    deduction_reverse(deduction_id=reversed_deduction.pk, reason="outage", actor=staff_user)
    UserCreditBalance.objects.filter(user=user).update(budget_month="", budget_spent=0)

    # when a budget is set
    budget = budget_set(user_id=user.pk, monthly_credits=100, hard_limit=True)

    # then it starts from what the ledger says was spent
    assert (budget.spent_this_month, budget.remaining) == (COST, 100 - COST)
    assert gateway.post(RECORD, usage_event(user), format="json").json()["code"] == "budget_exceeded"
