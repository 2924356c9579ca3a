"""Staff find through the API what they act on: a deduction's id on its usage row, a filterable list
of deductions, and the reversal that takes that id."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from credits.models import CreditDeductionLedger, UserCreditBalance
from credits.tests.conftest import fund, usage_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]

DEDUCTIONS = "/api/v1/admin/credits/deductions/"


def record(service_client, user, **overrides) -> dict:
    response = service_client.post("/api/v1/usage/record/", usage_event(user, **overrides), format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_a_recorded_request_names_its_deduction_in_the_answer_and_in_my_usage(service_client, user_client, user):
    # given
    fund(user, 10_000)
    # when
    recorded = record(service_client, user)
    usage = user_client.get("/api/v1/me/usage/").json()["results"]
    # then
    deduction = CreditDeductionLedger.objects.get(user=user)
    assert recorded["deduction_id"] == str(deduction.pk)
    assert deduction.amount == recorded["credits_deducted"]
    assert [row["deduction_id"] for row in usage] == [str(deduction.pk)]


def test_a_repeated_request_id_answers_the_same_deduction_id(service_client, user):
    fund(user, 10_000)
    event = usage_event(user)
    first = service_client.post("/api/v1/usage/record/", event, format="json")
    repeat = service_client.post("/api/v1/usage/record/", event, format="json")
    assert (first.status_code, repeat.status_code) == (201, 200)
    assert repeat.json()["deduction_id"] == first.json()["deduction_id"]
    assert CreditDeductionLedger.objects.filter(user=user).count() == 1


def test_staff_list_deductions_with_their_request_newest_first(staff_client, service_client, user, other_user):
    fund(user, 10_000)
    fund(other_user, 10_000)
    first = record(service_client, user)
    second = record(service_client, other_user, model="gpt-4-turbo")

    response = staff_client.get(DEDUCTIONS)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [row["id"] for row in body["results"]] == [second["deduction_id"], first["deduction_id"]]
    newest = body["results"][0]
    assert newest["user_id"] == other_user.pk
    assert newest["user_email"] == other_user.email
    assert newest["amount"] == second["credits_deducted"]
    assert newest["balance_after"] == second["balance_after"]
    assert (newest["provider"], newest["model_name"], newest["reason"]) == ("openai", "gpt-4-turbo", "inference")
    assert newest["request_id"] == second["request_id"]


def test_staff_filter_deductions_by_user_model_provider_and_date(staff_client, service_client, user, other_user):
    fund(user, 10_000)
    fund(other_user, 10_000)
    earlier = record(service_client, user)
    with time_machine.travel(timezone.now() + timedelta(minutes=30)):
        turbo = record(service_client, user, model="gpt-4-turbo")
        theirs = record(service_client, other_user)
    midway = (timezone.now() + timedelta(minutes=15)).isoformat()

    def ids(**query) -> set[str]:
        response = staff_client.get(DEDUCTIONS, query)
        assert response.status_code == 200, response.json()
        return {row["id"] for row in response.json()["results"]}

    assert ids(user=user.pk) == {earlier["deduction_id"], turbo["deduction_id"]}
    assert ids(model="gpt-4-turbo") == {turbo["deduction_id"]}
    assert ids(provider="openai", user=other_user.pk) == {theirs["deduction_id"]}
    assert ids(provider="anthropic") == set()
    assert ids(created_at_before=midway) == {earlier["deduction_id"]}
    assert ids(created_at_after=midway, user=user.pk) == {turbo["deduction_id"]}


def test_a_deduction_found_in_the_staff_list_is_reversed_by_its_id(staff_client, service_client, user):
    fund(user, 10_000)
    recorded = record(service_client, user)
    listed = staff_client.get(DEDUCTIONS, {"user": user.pk}).json()["results"][0]

    response = staff_client.post(
        f"{DEDUCTIONS}{listed['id']}/reverse/", {"reason": "The request failed upstream."}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["amount"] == recorded["credits_deducted"]
    assert UserCreditBalance.objects.get(user=user).amount == 10_000
    reversal = staff_client.get(DEDUCTIONS, {"user": user.pk, "reason": "reversal"}).json()["results"]
    assert [row["reverses_id"] for row in reversal] == [listed["id"]]


def test_erasing_the_staff_member_who_reversed_a_deduction_keeps_the_reversal_without_their_name(
    staff_client, staff_user, service_client, user
):
    fund(user, 10_000)
    record(service_client, user)
    original = CreditDeductionLedger.objects.get(user=user)
    staff_client.post(f"{DEDUCTIONS}{original.pk}/reverse/", {"reason": "Upstream failure."}, format="json")
    reversal = CreditDeductionLedger.objects.get(reverses=original)
    assert reversal.reversed_by_id == staff_user.pk

    staff_user.delete()

    reversal.refresh_from_db()
    assert (reversal.reversed_by_id, reversal.reversal_reason) == (None, "Upstream failure.")
    assert UserCreditBalance.objects.get(user=user).amount == 10_000


def test_the_deduction_list_is_for_staff_with_the_permission(user_client, support_client, api_client):
    assert api_client.get(DEDUCTIONS).status_code == 401
    forbidden = user_client.get(DEDUCTIONS)
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "permission_denied"
    assert support_client.get(DEDUCTIONS).status_code == 200


def test_a_bad_deduction_filter_is_a_400_problem(staff_client):
    response = staff_client.get(DEDUCTIONS, {"user": "not-a-number", "reason": "nonsense"})
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert set(response.json()["errors"]) == {"user", "reason"}
