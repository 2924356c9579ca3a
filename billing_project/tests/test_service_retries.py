"""Service transactions that meet a deadlock or a serialization failure run again inside the
service (bounded, with jitter), counted per operation; a retry repeats no effect. Real PostgreSQL
errors (SQLSTATE 40P01 / 40001) raised inside the services' own transactions."""

from unittest import mock

import pytest
from django.db import DatabaseError, connection, transaction
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from audit.models import AdminAuditLog
from credits.models import CreditAllocation, UserCreditBalance
from credits.services import grants
from payments.models import WebhookEvent, WebhookStatus
from payments.services import inbox
from subscriptions.tests.conftest import StripeIds, customer_register, subscribe_through_checkout

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

GRANT_OPERATION = "credits.services.grants.credit_grant_by_staff"


@pytest.fixture(autouse=True)
def _short_pauses(settings):
    settings.DB_CONFLICT_BACKOFF_SECONDS = 0.001


def conflicts(kind: str, outcome: str, operation: str) -> float:
    labels = {"kind": kind, "outcome": outcome, "operation": operation}
    return REGISTRY.get_sample_value("db_transaction_conflicts_total", labels) or 0.0


def conflict_raise(sqlstate: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DO $$ BEGIN RAISE EXCEPTION 'probe conflict' USING ERRCODE = '{sqlstate}'; END $$")


def failing_first(times: int, function, sqlstate="40P01"):
    """`function`, meeting a real conflict on its first `times` calls, after it ran (its writes roll back)."""
    calls = []

    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        calls.append(1)
        if len(calls) <= times:
            conflict_raise(sqlstate)
        return result

    return wrapper, calls


@pytest.mark.parametrize(("sqlstate", "kind"), [("40P01", "deadlock"), ("40001", "serialization_failure")])
def test_a_staff_grant_that_meets_a_conflict_is_retried_inside_the_service_and_applies_once(
    staff_client, user, sqlstate, kind
):
    before = conflicts(kind, "retried", GRANT_OPERATION)
    requests_before = conflicts(kind, "retried", "request")
    locked, calls = failing_first(2, grants._account_reading, sqlstate)

    with mock.patch.object(grants, "_account_reading", locked):
        response = staff_client.post(
            "/api/v1/admin/credits/grant/", {"user_id": user.pk, "amount": 500, "reason": "outage"}, format="json"
        )

    assert response.status_code == 201, response.content
    assert len(calls) == 3
    assert conflicts(kind, "retried", GRANT_OPERATION) == before + 2
    assert conflicts(kind, "retried", "request") == requests_before
    assert CreditAllocation.objects.filter(user=user).count() == 1
    assert UserCreditBalance.objects.get(user=user).amount == 500
    assert AdminAuditLog.objects.filter(action="grant").count() == 1


def test_a_service_gives_up_after_its_bounded_attempts_with_nothing_written(staff_user, user, settings):
    before = conflicts("deadlock", "gave_up", GRANT_OPERATION)
    locked, calls = failing_first(100, grants._account_reading)

    with mock.patch.object(grants, "_account_reading", locked), pytest.raises(DatabaseError):
        grants.credit_grant_by_staff(user=user, amount=500, reason="outage", actor=staff_user)

    assert len(calls) == 1 + settings.DB_CONFLICT_RETRIES
    assert conflicts("deadlock", "gave_up", GRANT_OPERATION) == before + 1
    assert not CreditAllocation.objects.filter(user=user).exists()
    assert not AdminAuditLog.objects.filter(action="grant").exists()


def test_inside_a_transaction_already_open_the_service_runs_once_and_the_outer_owner_decides(staff_user, user):
    locked, calls = failing_first(1, grants._account_reading)

    with mock.patch.object(grants, "_account_reading", locked), pytest.raises(DatabaseError), transaction.atomic():
        grants.credit_grant_by_staff(user=user, amount=500, reason="outage", actor=staff_user)

    assert len(calls) == 1


@pytest.mark.usefixtures("stripe_http")
def test_a_webhook_whose_handler_meets_a_deadlock_runs_again_whole_instead_of_failing():
    from subscriptions.services import tier_catalog_seed

    tier_catalog_seed()
    dispatch, calls = failing_first(1, inbox._dispatch)
    with mock.patch.object(inbox, "_dispatch", dispatch):
        subscription = subscribe_through_checkout(APIClient(), customer_register("hook@example.com"), StripeIds.new())

    assert len(calls) == 2
    event = WebhookEvent.objects.get(event_type="checkout.session.completed")
    assert (event.status, event.attempts, event.error) == (WebhookStatus.PROCESSED, 1, "")
    assert subscription.status == "active"
