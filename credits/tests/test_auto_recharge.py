import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from audit.models import AdminAuditLog
from billing_project.enums import EventType
from billing_project.models import Notification
from billing_project.service_tokens import service_token_issue
from conftest import bearer, run_concurrently
from credits.api.events import usage_event_parse
from credits.models import (
    AutoRecharge,
    CreditAllocation,
    CreditDeductionLedger,
    CreditPack,
    CreditSource,
    DeductionReason,
    UserCreditBalance,
)
from credits.services import pricing_catalog_seed, usage_record
from credits.services.recharge import AutoRechargeChange, auto_recharge_set
from credits.tasks import auto_recharge_run
from credits.tests.conftest import fund, usage_event
from payments.models import OperationKind, OperationState, Payment, PaymentOperation, StripeCustomer
from payments.services.customers import customer_ensure
from payments.services.refunds import payment_refund_record
from payments.tests.helpers import deliver_event

ME = "/api/v1/me/credits/auto-recharge/"

# One usage_event (1000 in + 2000 out on gpt-4o) costs 70 credits at the free tier's margin.
REQUEST_CREDITS = 70


@pytest.fixture
def offline(settings):
    settings.PAYMENTS_PROVIDER = "offline"


@pytest.fixture
def pack(db):
    return CreditPack.objects.create(name="Top-up 5k", credits=5000, price=Decimal("10.00"))


@pytest.fixture
def queue(monkeypatch):
    """A broker that keeps the queued checks (user ids) instead of running them at once: the test is
    the worker."""
    queued = []
    monkeypatch.setattr(auto_recharge_run, "delay", queued.append)
    return queued


def recharge_on(user, pack, *, threshold=1000, cap="100.00"):
    return auto_recharge_set(
        user=user,
        change=AutoRechargeChange(enabled=True, threshold=threshold, pack_id=pack.pk, monthly_cap=Decimal(cap)),
        actor=user,
    )


def recharges(user):
    return PaymentOperation.objects.filter(kind=OperationKind.CREDIT_RECHARGE, user=user)


def notified(user, kind) -> list:
    return list(Notification.objects.filter(user=user, kind=kind).order_by("created_at"))


# The trigger: deductions below the threshold, exactly one recharge


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_deductions_crossing_the_threshold_make_exactly_one_recharge(user, offline, pack):
    # given 2000 credits and a recharge due below 1000 credits
    pricing_catalog_seed()
    fund(user, 2000)
    recharge_on(user, pack, threshold=1000)

    # when 20 requests of 70 credits are recorded at once (1400 credits: the balance crosses 1000)
    def record_one(_):
        client = APIClient()
        client.credentials(**bearer(service_token_issue(service="gateway", scopes=["usage:write"]).token))
        return client.post("/api/v1/usage/record/", usage_event(user), format="json").status_code

    statuses = run_concurrently(record_one, list(range(20)))

    # then one recharge was charged and granted once, after the requests committed
    assert statuses == [201] * 20
    (operation,) = recharges(user)
    assert operation.state == OperationState.SUCCEEDED
    (granted,) = CreditAllocation.objects.filter(user=user, source=CreditSource.PURCHASE)
    assert granted.payment_operation_id == operation.pk and granted.amount == 5000
    assert UserCreditBalance.objects.get(user=user).amount == 2000 - 20 * REQUEST_CREDITS + 5000
    assert len(notified(user, EventType.CREDITS_RECHARGE_SUCCEEDED)) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_recharge_checks_open_one_operation(user, offline, pack, queue):
    # given a user below the threshold, whose enabling queued a check
    fund(user, 100)
    recharge_on(user, pack, threshold=1000)
    assert queue == [user.pk]

    # when 20 queued checks run at once
    results = run_concurrently(lambda _: auto_recharge_run(user.pk), list(range(20)))

    # then exactly one opened and charged a recharge; the others found it in flight or done
    assert all(not isinstance(result, Exception) for result in results), results
    assert sum(result is not None for result in results) == 1
    assert recharges(user).count() == 1
    assert CreditAllocation.objects.filter(user=user, source=CreditSource.PURCHASE).count() == 1
    assert UserCreditBalance.objects.get(user=user).amount == 5100


def test_a_deduction_below_the_threshold_queues_a_check_after_commit(
    user, offline, pack, django_capture_on_commit_callbacks
):
    # given 1050 credits and a recharge due below 1000
    pricing_catalog_seed()
    fund(user, 1050)
    recharge_on(user, pack, threshold=1000)

    # when a request of 70 credits is recorded
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        usage_record(event=_event(user))
    # then nothing was charged inside the request: the check waits for the commit
    assert recharges(user).count() == 0

    for callback in callbacks:
        callback()
    (operation,) = recharges(user)
    assert operation.state == OperationState.SUCCEEDED
    assert UserCreditBalance.objects.get(user=user).amount == 1050 - REQUEST_CREDITS + 5000


def test_a_deduction_above_the_threshold_or_without_auto_recharge_queues_nothing(
    user, other_user, offline, pack, django_capture_on_commit_callbacks
):
    pricing_catalog_seed()
    fund(user, 5000)
    fund(other_user, 500)
    recharge_on(user, pack, threshold=1000)

    with django_capture_on_commit_callbacks(execute=True):
        usage_record(event=_event(user))
        usage_record(event=_event(other_user))

    assert PaymentOperation.objects.filter(kind=OperationKind.CREDIT_RECHARGE).count() == 0


def _event(user):
    event, errors = usage_event_parse(usage_event(user))
    assert not errors
    return event


def _queries_of_one_record(user) -> int:
    with CaptureQueriesContext(connection) as queries:
        usage_record(event=_event(user))
    return len(queries)


def test_recording_usage_costs_no_query_more_with_auto_recharge_on(user, other_user, offline, pack):
    # given two users with the same credits, one with auto-recharge on (and crossing its threshold)
    pricing_catalog_seed()
    fund(user, 1050)
    fund(other_user, 1050)
    recharge_on(user, pack, threshold=1000)
    _queries_of_one_record(other_user)  # the pricing book is loaded once per process, not per request

    # when each records one request
    without = _queries_of_one_record(other_user)
    crossing = _queries_of_one_record(user)
    below = _queries_of_one_record(user)

    # then the same number of queries
    assert crossing == without
    assert below == without


# The monthly cap


def test_the_monthly_cap_stops_recharges_until_the_next_month(user, offline, pack):
    # given a cap of 25.00 a month and a pack of 10.00, with a threshold no pack reaches
    with time_machine.travel(datetime(2026, 3, 10, 12, tzinfo=UTC), tick=False):
        recharge_on(user, pack, threshold=1_000_000, cap="25.00")

        # when checks run all month
        opened = [auto_recharge_run(user.pk) for _ in range(4)]

        # then two recharges (20.00), none past the cap
        assert [bool(result) for result in opened] == [True, True, False, False]

    with time_machine.travel(datetime(2026, 3, 31, 23, 59, tzinfo=UTC), tick=False):
        assert auto_recharge_run(user.pk) is None

    # and again in April
    with time_machine.travel(datetime(2026, 4, 1, 0, 1, tzinfo=UTC), tick=False):
        assert auto_recharge_run(user.pk) is not None
        assert auto_recharge_run(user.pk) is not None
        assert auto_recharge_run(user.pk) is None

    assert recharges(user).filter(state=OperationState.SUCCEEDED).count() == 4
    assert UserCreditBalance.objects.get(user=user).amount == 4 * 5000


# Declines, authentication, pause (Stripe emulator at the HTTP layer)


@pytest.fixture
def stripe(stripe_http):
    stripe_http.watch_transactions(connection.settings_dict["NAME"])
    yield stripe_http
    assert stripe_http.state.transaction_violations == [], "a Stripe call was made inside a transaction"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_declined_card_is_told_and_pauses_auto_recharge_after_the_configured_failures(
    user, pack, stripe, settings, queue
):
    # given a saved card that declines, and auto-recharge pausing after 2 failures
    settings.AUTO_RECHARGE_MAX_FAILURES = 2
    customer_ensure(user=user)
    recharge_on(user, pack, threshold=1000)
    stripe.pay_mode = "decline"

    # when two recharges are declined
    first = auto_recharge_run(user.pk)
    setting = AutoRecharge.objects.get(user=user)
    assert setting.consecutive_failures == 1 and setting.paused_at is None
    second = auto_recharge_run(user.pk)

    # then each is told once, the second pauses auto-recharge, and no more recharge is tried
    failed = notified(user, EventType.CREDITS_RECHARGE_FAILED)
    assert [item.occurrence for item in failed] == [first, second]
    assert {item.context["reason"] for item in failed} == {"declined"}
    (paused,) = notified(user, EventType.CREDITS_RECHARGE_PAUSED)
    setting.refresh_from_db()
    assert setting.consecutive_failures == 2 and setting.paused_at is not None
    assert UserCreditBalance.objects.get(user=user).auto_recharge_below is None
    assert auto_recharge_run(user.pk) is None
    assert recharges(user).count() == 2
    assert not recharges(user).filter(state__in=(OperationState.PENDING, OperationState.SUBMITTED)).exists()
    assert stripe.state.charges == []
    assert not CreditAllocation.objects.filter(user=user, source=CreditSource.PURCHASE).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_card_needing_authentication_is_told_then_the_paid_invoice_grants_the_credits(user, pack, stripe, queue):
    # given a saved card whose bank asks the customer to confirm
    customer_ensure(user=user)
    recharge_on(user, pack, threshold=1000)
    stripe.pay_mode = "action_required"

    # when the recharge runs
    operation_id = auto_recharge_run(user.pk)

    # then it waits for the customer, who is told; it counts as a failure; no second recharge meanwhile
    operation = PaymentOperation.objects.get(pk=operation_id)
    assert operation.state == OperationState.SUBMITTED
    (failed,) = notified(user, EventType.CREDITS_RECHARGE_FAILED)
    assert failed.occurrence == operation_id and failed.context["reason"] == "action_required"
    assert AutoRecharge.objects.get(user=user).consecutive_failures == 1
    assert auto_recharge_run(user.pk) is None

    # when the customer confirms and Stripe's invoice.paid arrives
    invoice = stripe.async_payment_settle(operation.stripe_invoice_id, succeeded=True)
    row, _ = deliver_event("invoice.paid", invoice)

    # then the credits are granted once and the failures forgotten
    assert row.status == "processed", row.error
    operation.refresh_from_db()
    assert operation.state == OperationState.SUCCEEDED
    assert CreditAllocation.objects.get(user=user, source=CreditSource.PURCHASE).payment_operation_id == operation.pk
    assert AutoRecharge.objects.get(user=user).consecutive_failures == 0
    assert len(notified(user, EventType.CREDITS_RECHARGE_SUCCEEDED)) == 1
    assert len(notified(user, EventType.CREDITS_RECHARGE_FAILED)) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_asynchronous_recharge_that_fails_later_is_settled_by_its_webhook(user, pack, stripe, queue):
    # given a recharge paid by a method that settles later
    customer_ensure(user=user)
    recharge_on(user, pack, threshold=1000)
    stripe.pay_mode = "async"
    operation = PaymentOperation.objects.get(pk=auto_recharge_run(user.pk))
    assert operation.state == OperationState.SUBMITTED
    assert notified(user, EventType.CREDITS_RECHARGE_FAILED) == []

    # when the payment fails and Stripe's invoice.payment_failed arrives
    invoice = stripe.async_payment_settle(operation.stripe_invoice_id, succeeded=False)
    row, _ = deliver_event("invoice.payment_failed", {**invoice, "attempt_count": 1})

    # then the recharge is failed, counted and told once; no credits
    assert row.status == "processed", row.error
    operation.refresh_from_db()
    assert operation.effect == "failed"
    (failed,) = notified(user, EventType.CREDITS_RECHARGE_FAILED)
    assert failed.occurrence == str(operation.pk) and failed.context["reason"] == "declined"
    assert AutoRecharge.objects.get(user=user).consecutive_failures == 1
    assert not CreditAllocation.objects.filter(user=user, source=CreditSource.PURCHASE).exists()


# The API


def test_a_user_without_auto_recharge_reads_it_off(user_client):
    response = user_client.get(ME)

    assert response.status_code == 200
    assert response.json()["enabled"] is False and response.json()["pack"] is None


def test_a_user_turns_auto_recharge_on_and_the_balance_carries_the_threshold(user, user_client, offline, pack):
    response = user_client.put(
        ME, {"enabled": True, "threshold": 1000, "pack": str(pack.pk), "monthly_cap": "50.00"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["enabled"] is True and body["threshold"] == 1000 and body["monthly_cap"] == "50.00"
    assert body["pack"]["id"] == str(pack.pk) and body["charged_this_month"] == "0.00"
    assert UserCreditBalance.objects.get(user=user).auto_recharge_below == 1000


@pytest.mark.parametrize(
    ("change", "status", "code", "field"),
    [
        ({"threshold": -1}, 400, "validation_error", "threshold"),
        ({"monthly_cap": "9.99"}, 422, "cap_below_pack_price", None),
        ({"pack": str(uuid.uuid4())}, 422, "unknown_pack", None),
        ({"monthly_cap": "ten"}, 400, "validation_error", "monthly_cap"),
    ],
)
def test_bad_auto_recharge_settings_are_refused_with_a_problem(
    user, user_client, offline, pack, change, status, code, field
):
    body = {"enabled": True, "threshold": 1000, "pack": str(pack.pk), "monthly_cap": "50.00", **change}

    response = user_client.put(ME, body, format="json")

    assert response.status_code == status
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    if field:
        assert field in response.json()["errors"]
    assert not AutoRecharge.objects.filter(user=user).exists()


def test_an_inactive_pack_cannot_be_chosen(user, user_client, offline, pack):
    pack.is_active = False
    pack.save()

    response = user_client.put(
        ME, {"enabled": True, "threshold": 1000, "pack": str(pack.pk), "monthly_cap": "50.00"}, format="json"
    )

    assert response.status_code == 422 and response.json()["code"] == "pack_inactive"


def test_enabling_needs_a_saved_card_when_stripe_is_the_provider(user, user_client, pack, settings):
    settings.PAYMENTS_PROVIDER = "stripe"
    body = {"enabled": True, "threshold": 1000, "pack": str(pack.pk), "monthly_cap": "50.00"}

    refused = user_client.put(ME, body, format="json")
    StripeCustomer.objects.create(user=user, stripe_customer_id="cus_saved")
    accepted = user_client.put(ME, body, format="json")

    assert refused.status_code == 422 and refused.json()["code"] == "no_saved_card"
    assert accepted.status_code == 200


def test_enabling_a_paused_auto_recharge_resumes_it(user, user_client, offline, pack):
    setting = recharge_on(user, pack)
    setting.paused_at, setting.pause_reason, setting.consecutive_failures = datetime.now(UTC), "3 failed", 3
    setting.save()

    response = user_client.put(
        ME, {"enabled": True, "threshold": 1000, "pack": str(pack.pk), "monthly_cap": "50.00"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["paused"] is False and response.json()["consecutive_failures"] == 0
    assert UserCreditBalance.objects.get(user=user).auto_recharge_below == 1000


def test_staff_set_a_users_auto_recharge_with_an_audit_row(roles_synced, user, staff_client, offline, pack):
    url = f"/api/v1/admin/credits/auto-recharge/{user.pk}/"

    response = staff_client.put(
        url, {"enabled": True, "threshold": 2000, "pack": str(pack.pk), "monthly_cap": "30.00"}, format="json"
    )

    assert response.status_code == 200, response.content
    setting = AutoRecharge.objects.get(user=user)
    assert setting.threshold == 2000 and setting.updated_by.is_staff
    audit = AdminAuditLog.objects.get(resource_id=str(setting.pk))
    assert audit.new_value["threshold"] == 2000
    assert staff_client.get(url).json()["threshold"] == 2000


def test_staff_turn_a_users_auto_recharge_off_and_a_paused_one_back_on_from_the_console(
    roles_synced, user, staff_user, client, offline, pack
):
    setting = recharge_on(user, pack)
    client.force_login(staff_user)
    selection = {"_selected_action": [str(setting.pk)], "apply": "1"}

    off = client.post("/admin/credits/autorecharge/", {**selection, "action": "auto_recharge_turn_off"})

    assert off.status_code == 302
    setting.refresh_from_db()
    assert setting.enabled is False and setting.updated_by == staff_user
    assert UserCreditBalance.objects.get(user=user).auto_recharge_below is None
    setting.paused_at, setting.pause_reason, setting.consecutive_failures = datetime.now(UTC), "3 failed", 3
    setting.save()

    on = client.post("/admin/credits/autorecharge/", {**selection, "action": "auto_recharge_turn_on"})

    assert on.status_code == 302
    setting.refresh_from_db()
    assert (setting.enabled, setting.paused_at, setting.consecutive_failures) == (True, None, 0)
    assert UserCreditBalance.objects.get(user=user).auto_recharge_below == setting.threshold
    rows = AdminAuditLog.objects.filter(resource_id=str(setting.pk)).order_by("timestamp")
    assert [(row.new_value["enabled"], row.actor) for row in rows] == [(False, staff_user), (True, staff_user)]


def test_staff_get_a_problem_for_an_unknown_user_and_support_cannot_change(
    roles_synced, support_client, staff_client, user, pack
):
    missing = staff_client.get("/api/v1/admin/credits/auto-recharge/999999/")
    body = {"enabled": False, "threshold": 1000, "pack": str(pack.pk), "monthly_cap": "50.00"}
    forbidden = support_client.put(f"/api/v1/admin/credits/auto-recharge/{user.pk}/", body, format="json")
    readable = support_client.get(f"/api/v1/admin/credits/auto-recharge/{user.pk}/")

    assert missing.status_code == 404 and missing.json()["code"] == "unknown_user"
    assert forbidden.status_code == 403
    assert readable.status_code == 200


# Refunds


def test_a_refunded_recharge_takes_back_what_is_left_of_its_credits(user, offline, pack, queue):
    # given a recharge of 5000 credits, 70 of them spent
    pricing_catalog_seed()
    recharge_on(user, pack, threshold=1000)
    operation = PaymentOperation.objects.get(pk=auto_recharge_run(user.pk))
    usage_record(event=_event(user))
    payment = Payment.objects.get(operation=operation)

    # when its payment is refunded in full
    payment_refund_record(
        payment_id=payment.pk, refund_id="re_recharge", amount=payment.amount, operation_id=uuid.uuid4()
    )

    # then the credits left of it are taken back, once, the spent ones stay spent
    taken = CreditDeductionLedger.objects.filter(user=user, reason=DeductionReason.ADMIN_ADJUSTMENT)
    assert list(taken.values_list("amount", flat=True)) == [5000 - REQUEST_CREDITS]
    assert UserCreditBalance.objects.get(user=user).amount == 0


def test_staff_refund_half_a_recharge_and_half_its_credits_are_taken_back(
    roles_synced, staff_client, user, offline, pack, queue
):
    # given a recharge of 5000 credits for 10.00, 70 of them spent
    pricing_catalog_seed()
    recharge_on(user, pack, threshold=1000)
    operation = PaymentOperation.objects.get(pk=auto_recharge_run(user.pk))
    usage_record(event=_event(user))
    payment = Payment.objects.get(operation=operation)

    # when staff refund 5.00 of it
    response = staff_client.post(
        f"/api/v1/admin/payments/{payment.pk}/refund/", {"amount_usd": "5.00", "reason": "Goodwill"}, format="json"
    )

    # then half the credits are taken back and the payment shows the refund
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "succeeded"
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (500, "partially_refunded")
    taken = CreditDeductionLedger.objects.filter(user=user, reason=DeductionReason.ADMIN_ADJUSTMENT)
    assert list(taken.values_list("amount", flat=True)) == [2500]
    assert UserCreditBalance.objects.get(user=user).amount == 5000 - REQUEST_CREDITS - 2500


def test_a_retired_pack_pauses_auto_recharge_with_a_notification(user, offline, pack, queue):
    # given auto-recharge on a pack staff have since retired
    recharge_on(user, pack, threshold=1000)
    pack.is_active = False
    pack.save()

    # when a check runs
    opened = auto_recharge_run(user.pk)

    # then nothing is charged; auto-recharge is paused and the user told why
    assert opened is None and recharges(user).count() == 0
    setting = AutoRecharge.objects.get(user=user)
    assert setting.paused_at is not None and "no longer offered" in setting.pause_reason
    (paused,) = notified(user, EventType.CREDITS_RECHARGE_PAUSED)
    assert paused.context["pause_reason"] == setting.pause_reason
    assert UserCreditBalance.objects.get(user=user).auto_recharge_below is None


def test_deductions_below_the_threshold_queue_one_check_per_window(
    user, offline, pack, queue, django_capture_on_commit_callbacks
):
    # given a user whose recharge is due (enabling below the threshold queued the first check)
    pricing_catalog_seed()
    fund(user, 1050)
    with django_capture_on_commit_callbacks(execute=True):
        recharge_on(user, pack, threshold=2000)
    assert queue == [user.pk]

    # when more requests are recorded below the threshold, while that check is still queued
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            usage_record(event=_event(user))
        assert callbacks

    # then no second check is queued within AUTO_RECHARGE_QUEUE_SECONDS
    assert queue == [user.pk]
