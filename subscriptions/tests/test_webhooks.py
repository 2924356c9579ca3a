"""Stripe webhooks through the HTTP endpoint, with bodies signed by the stripe SDK: the pipeline
(signature, storage, replay, failure) and what each handled event does to the billing state."""

import json
import time
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from auditlog.models import LogEntry
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from prometheus_client import REGISTRY

from audit.models import AdminAuditLog, AuditAction
from billing_project.models import OutboundEvent
from billing_project.tests.protocol import queries_sent
from conftest import forget_test_cache
from credits.models import CreditAllocation, CreditSource, UserCreditBalance
from payments.models import Payment, PaymentEvent, PaymentOperation, WebhookEvent, WebhookStatus
from payments.services.inbox import _finished_key
from payments.services.refunds import payment_record
from payments.tests.stripe_emulator import event_payload, signature_header
from subscriptions.models import (
    BillingInvoice,
    DunningAttempt,
    DunningResult,
    InvoiceStatus,
    PaymentStatus,
    PaymentTransaction,
    Subscription,
    SubscriptionStatus,
    TierConfig,
    UserEntitlement,
)
from subscriptions.periods import period_end
from subscriptions.services import subscription_start
from subscriptions.tests.conftest import (
    MONTH,
    WEBHOOK_URL,
    StripeIds,
    checkout_completed_event,
    customer_register,
    deliver,
    stripe_event,
    subscribe_through_checkout,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_http", "tier_catalog")]

PROBLEM = "application/problem+json"


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counts() -> dict:
    """Every table a webhook may write, counted: a refused or repeated event must leave them as they were."""
    return {
        model.__name__: model.objects.count()
        for model in (
            WebhookEvent,
            PaymentEvent,
            AdminAuditLog,
            Subscription,
            BillingInvoice,
            PaymentTransaction,
            DunningAttempt,
            CreditAllocation,
            UserEntitlement,
        )
    }


def balance_of(user) -> int:
    return UserCreditBalance.objects.get(user=user).amount


@pytest.fixture
def subscriber(webhook_client):
    """A registered user who paid a Stripe checkout for Pro (monthly): their subscription and its ids."""
    user = customer_register("subscriber@example.com")
    ids = StripeIds.new()
    subscription = subscribe_through_checkout(webhook_client, user, ids)
    return user, subscription, ids


def renewal_event(subscription: Subscription, ids: StripeIds, /, name="invoice.paid", **fields) -> dict:
    """The subscription's next-period invoice (billing_reason subscription_cycle)."""
    start = subscription.current_period_end
    return stripe_event(name, ids, period=(start, start + MONTH), billing_reason="subscription_cycle", **fields)


# The pipeline: signature, storage, replay


def test_signed_event_is_processed_with_its_payment_event_and_audit_row(webhook_client, stripe_http):
    user = customer_register("buyer@example.com")
    ids = StripeIds.new()
    event = checkout_completed_event(user, ids)

    response = deliver(webhook_client, event)

    assert response.status_code == 200, response.content
    subscription = Subscription.objects.get(user=user, tier="pro")
    row = WebhookEvent.objects.get()
    operation = PaymentOperation.objects.get(stripe_checkout_session_id=ids.session)
    result = {
        "action": "operation_settled",
        "operation_id": str(operation.pk),
        "kind": "subscription_checkout",
        "state": "succeeded",
        "object_id": str(subscription.pk),
    }
    assert response.json() == {
        "event_id": event["id"],
        "event_type": "checkout.session.completed",
        "status": "processed",
        "result": result,
        "replayed": False,
    }
    assert (row.provider, row.event_id, row.event_type, row.status) == (
        "stripe",
        event["id"],
        "checkout.session.completed",
        WebhookStatus.PROCESSED,
    )
    assert (row.result, row.error, row.attempts, row.payload) == (result, "", 1, event)
    assert row.processed_at is not None
    assert int(row.event_created_at.timestamp()) == event["created"]
    payment_event = PaymentEvent.objects.get(webhook_event=row)
    assert (payment_event.user, payment_event.event_type, payment_event.amount, payment_event.currency) == (
        user,
        "checkout_completed",
        1900,
        "usd",
    )
    assert (payment_event.customer_id, payment_event.subscription_id, payment_event.invoice_id) == (
        ids.customer,
        ids.subscription,
        ids.invoice,
    )
    metadata = payment_event.metadata
    assert (metadata["kind"], metadata["operation_id"]) == ("subscription", str(operation.pk))
    assert payment_event.metadata["session_id"] == ids.session
    audit = AdminAuditLog.objects.get(action=AuditAction.PROCESS, resource_id=str(operation.pk))
    assert (audit.new_value["state"], audit.new_value["stripe_checkout_session_id"]) == ("succeeded", ids.session)
    assert row.raw_body == json.dumps(event)
    # a webhook never calls back into Stripe
    assert stripe_http.requests == []


@pytest.mark.parametrize("forgery", ["other_secret", "body_changed_after_signing"])
def test_bad_signature_is_refused_and_counted_with_nothing_stored(webhook_client, forgery):
    user = customer_register("buyer@example.com")
    payload = json.dumps(checkout_completed_event(user, StripeIds.new()))
    if forgery == "other_secret":
        header = signature_header(payload, secret="whsec_someone_else_0123456789abcdefghij")
    else:
        header = signature_header(payload)
        payload = payload.replace('"amount_total": 1900', '"amount_total": 1')
    before, refused_before = counts(), metric("billing_webhook_invalid_sig_total")

    response = webhook_client.post(
        WEBHOOK_URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert (body["code"], body["status"], body["title"]) == ("invalid_signature", 400, "Invalid webhook signature")
    assert counts() == before
    assert metric("billing_webhook_invalid_sig_total") == refused_before + 1


def test_stale_signature_is_refused_with_nothing_stored(webhook_client):
    user = customer_register("buyer@example.com")
    event = checkout_completed_event(user, StripeIds.new())
    before, refused_before = counts(), metric("billing_webhook_invalid_sig_total")

    response = deliver(webhook_client, event, timestamp=int(time.time()) - 301)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_signature"
    assert "tolerance" in response.json()["detail"]
    assert counts() == before
    assert metric("billing_webhook_invalid_sig_total") == refused_before + 1


def test_signature_a_little_under_five_minutes_old_is_accepted(webhook_client):
    user = customer_register("buyer@example.com")

    response = deliver(
        webhook_client, checkout_completed_event(user, StripeIds.new()), timestamp=int(time.time()) - 290
    )

    assert response.status_code == 200
    assert WebhookEvent.objects.get().status == WebhookStatus.PROCESSED


def test_missing_signature_header_is_refused(webhook_client):
    user = customer_register("buyer@example.com")
    before = counts()

    response = webhook_client.post(
        WEBHOOK_URL, data=json.dumps(checkout_completed_event(user, StripeIds.new())), content_type="application/json"
    )

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "invalid_signature"
    assert counts() == before


def test_events_are_refused_when_no_webhook_secret_is_configured(webhook_client, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    user = customer_register("buyer@example.com")
    before = counts()

    response = deliver(webhook_client, checkout_completed_event(user, StripeIds.new()))

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_signature"
    assert counts() == before


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_a_method_other_than_post_is_refused_as_a_405_problem(webhook_client, method):
    response = getattr(webhook_client, method)(WEBHOOK_URL)

    assert response.status_code == 405
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "method_not_allowed"
    assert "POST" in response["Allow"]


def test_unknown_event_type_is_stored_as_ignored_and_acknowledged(webhook_client):
    payload = event_payload(
        "customer.created", {"id": "cus_QhNew0001", "object": "customer", "email": "x@example.com"}, event_id="evt_1"
    )
    before = counts()

    response = webhook_client.post(
        WEBHOOK_URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature_header(payload)
    )

    assert response.status_code == 200
    assert response.json() == {
        "event_id": "evt_1",
        "event_type": "customer.created",
        "status": "ignored",
        "result": None,
        "replayed": False,
    }
    row = WebhookEvent.objects.get()
    assert (row.event_type, row.status, row.result, row.payload["data"]["object"]["id"]) == (
        "customer.created",
        WebhookStatus.IGNORED,
        None,
        "cus_QhNew0001",
    )
    assert counts() == {**before, "WebhookEvent": 1}


def test_replayed_event_answers_its_first_result_without_a_second_effect(webhook_client, subscriber):
    user, subscription, ids = subscriber
    event = renewal_event(subscription, ids.next_invoice())
    first = deliver(webhook_client, event)
    assert first.status_code == 200
    before, balance = counts(), balance_of(user)
    blocks, hits = metric("billing_webhook_replay_block_total"), metric("idempotent_hits_total", operation="webhook")

    replay = deliver(webhook_client, event)

    assert replay.status_code == 200
    assert replay.json() == {**first.json(), "replayed": True}
    assert replay.json()["result"]["action"] == "invoice_paid"
    assert counts() == before
    assert balance_of(user) == balance
    assert WebhookEvent.objects.get(event_id=event["id"]).attempts == 1
    assert metric("billing_webhook_replay_block_total") == blocks + 1
    assert metric("idempotent_hits_total", operation="webhook") == hits + 1


def deliver_committed(client, event, capture_on_commit):
    """One delivery with its after-commit work run, as a server's commit runs it (the answer cached)."""
    with capture_on_commit(execute=True):
        return deliver(client, event)


def test_a_redelivery_of_a_finished_event_is_answered_from_the_cache_with_no_query(
    webhook_client, subscriber, django_capture_on_commit_callbacks, django_assert_num_queries
):
    user, subscription, ids = subscriber
    event = renewal_event(subscription, ids.next_invoice())
    first = deliver_committed(webhook_client, event, django_capture_on_commit_callbacks)
    before, balance = counts(), balance_of(user)
    blocks = metric("billing_webhook_replay_block_total")

    with django_assert_num_queries(0):
        replay = deliver(webhook_client, event)

    assert replay.status_code == 200
    assert replay.json() == {**first.json(), "replayed": True}
    assert (counts(), balance_of(user)) == (before, balance)
    assert metric("billing_webhook_replay_block_total") == blocks + 1


@pytest.mark.parametrize("cached", ["nothing", "another_releases_fields"])
def test_a_redelivery_the_cache_does_not_hold_is_answered_from_the_stored_row(
    webhook_client, subscriber, django_capture_on_commit_callbacks, cached
):
    _, subscription, ids = subscriber
    event = renewal_event(subscription, ids.next_invoice())
    first = deliver_committed(webhook_client, event, django_capture_on_commit_callbacks)
    forget_test_cache()  # expired, evicted, or Redis restarted empty
    if cached == "another_releases_fields":
        cache.set(_finished_key(event["id"]), {"id": "x", "event_id": event["id"], "status": "processed"})

    with CaptureQueriesContext(connection) as queries:
        replay = deliver(webhook_client, event)

    assert replay.json() == {**first.json(), "replayed": True}
    statements = [query["sql"] for query in queries.captured_queries if "SAVEPOINT" not in query["sql"]]
    assert 'FROM "payments_webhookevent"' in statements[0]
    assert WebhookEvent.objects.get(event_id=event["id"]).attempts == 1


def test_a_finished_event_that_a_staff_replay_fails_is_processed_again_at_its_next_delivery(
    webhook_client, subscriber, django_capture_on_commit_callbacks, monkeypatch
):
    user, subscription, ids = subscriber
    event = renewal_event(subscription, ids.next_invoice())
    deliver_committed(webhook_client, event, django_capture_on_commit_callbacks)
    with monkeypatch.context() as patched, django_capture_on_commit_callbacks(execute=True):
        patched.setattr("subscriptions.services.billing.invoice_paid", renewal_bug)
        with pytest.raises(CommandError, match="failed again: ZeroDivisionError"):
            call_command("replay_webhook", event["id"])
    assert WebhookEvent.objects.get(event_id=event["id"]).status == WebhookStatus.FAILED

    again = deliver(webhook_client, event)

    assert again.status_code == 200
    answer = again.json()
    assert (answer["replayed"], answer["result"]["action"], answer["result"]["already_recorded"]) == (
        False,
        "invoice_paid",
        True,
    )
    row = WebhookEvent.objects.get(event_id=event["id"])
    assert (row.status, row.attempts) == (WebhookStatus.PROCESSED, 3)
    assert BillingInvoice.objects.filter(user=user, stripe_invoice_id=event["data"]["object"]["id"]).count() == 1


def test_a_failed_event_is_not_answered_from_the_cache(
    webhook_client, subscriber, django_capture_on_commit_callbacks, monkeypatch
):
    _, subscription, ids = subscriber
    event = renewal_event(subscription, ids.next_invoice())
    with monkeypatch.context() as patched, django_capture_on_commit_callbacks(execute=True):
        patched.setattr("subscriptions.services.billing.invoice_paid", renewal_bug)
        assert deliver(webhook_client, event).status_code == 500

    again = deliver(webhook_client, event)

    assert (again.status_code, again.json()["replayed"], again.json()["result"]["action"]) == (
        200,
        False,
        "invoice_paid",
    )


# Out-of-order delivery


def test_older_subscription_update_arriving_after_a_newer_one_is_skipped(webhook_client, subscriber):
    user, subscription, ids = subscriber
    now = timezone.now()
    newer = stripe_event(
        "customer.subscription.updated", ids, created=now, status="past_due", cancel_at_period_end=True
    )
    older = stripe_event("customer.subscription.updated", ids, created=now - timedelta(minutes=2), status="active")

    applied = deliver(webhook_client, newer)
    late = deliver(webhook_client, older)

    assert applied.json()["result"] == {
        "action": "subscription_updated",
        "subscription_id": str(subscription.pk),
        "subscription_status": "past_due",
        "cancel_at_period_end": True,
        "cancel_at": None,
        "tier": "pro",
        "tier_changed": False,
        "pause": "",
    }
    assert late.status_code == 200
    assert late.json()["status"] == "processed"
    assert late.json()["result"] == {
        "action": "stale_event_skipped",
        "object_id": ids.subscription,
        "newer_event_id": newer["id"],
    }
    subscription.refresh_from_db()
    assert (subscription.status, subscription.cancel_at_period_end) == (SubscriptionStatus.PAST_DUE, True)
    assert int(subscription.provider_updated_at.timestamp()) == newer["created"]
    assert PaymentEvent.objects.filter(event_type="subscription_updated").count() == 1


def test_subscription_updates_in_order_each_apply(webhook_client, subscriber):
    user, subscription, ids = subscriber
    now = timezone.now()
    cancelling = stripe_event(
        "customer.subscription.updated", ids, created=now - timedelta(minutes=2), cancel_at_period_end=True
    )
    resumed = stripe_event("customer.subscription.updated", ids, created=now, cancel_at_period_end=False)

    deliver(webhook_client, cancelling)
    subscription.refresh_from_db()
    assert subscription.cancel_at_period_end is True
    deliver(webhook_client, resumed)

    subscription.refresh_from_db()
    assert (subscription.status, subscription.cancel_at_period_end) == (SubscriptionStatus.ACTIVE, False)
    assert PaymentEvent.objects.filter(event_type="subscription_updated").count() == 2


# An event about something not known here; a handler that fails


def _invoice_before_its_checkout(webhook_client):
    """Stripe's invoice.paid for a new subscription, arriving before its checkout.session.completed."""
    user = customer_register("early@example.com")
    ids = StripeIds.new()
    now = timezone.now()
    event = stripe_event("invoice.paid", ids, period=(now, now + MONTH), billing_reason="subscription_create")
    return user, ids, event


def test_invoice_of_an_unknown_subscription_is_acknowledged_as_unmatched_with_its_reason(webhook_client):
    user, ids, event = _invoice_before_its_checkout(webhook_client)
    before = counts()

    response = deliver(webhook_client, event)

    assert response.status_code == 200
    reason = f"No subscription {ids.subscription} here for invoice {ids.invoice}."
    assert response.json() == {
        "event_id": event["id"],
        "event_type": "invoice.paid",
        "status": "unmatched",
        "result": {"action": "unmatched", "reason": reason},
        "replayed": False,
    }
    row = WebhookEvent.objects.get()
    assert (row.status, row.unmatched_reason, row.error, row.attempts, row.object_id) == (
        WebhookStatus.UNMATCHED,
        reason,
        "",
        1,
        ids.invoice,
    )
    assert counts() == {**before, "WebhookEvent": 1}


def _assert_invoice_applied_once(user, ids, subscription):
    invoice = BillingInvoice.objects.get(user=user)
    assert (invoice.stripe_invoice_id, invoice.status, invoice.subscription) == (ids.invoice, "paid", subscription)
    assert PaymentTransaction.objects.filter(user=user).count() == 1
    assert CreditAllocation.objects.filter(subscription_id=subscription.pk).count() == 1
    money = PaymentEvent.objects.filter(invoice_id=ids.invoice).exclude(amount=None)
    assert [event.event_type for event in money] == ["checkout_completed"]


def test_unmatched_event_is_processed_by_replay_webhook_once_its_subscription_exists(webhook_client):
    user, ids, event = _invoice_before_its_checkout(webhook_client)
    assert deliver(webhook_client, event).json()["status"] == "unmatched"
    subscription = subscribe_through_checkout(webhook_client, user, ids)
    out = StringIO()

    call_command("replay_webhook", event["id"], stdout=out)

    row = WebhookEvent.objects.get(event_id=event["id"])
    assert (row.status, row.unmatched_reason, row.attempts, row.result["action"]) == (
        WebhookStatus.PROCESSED,
        "",
        2,
        "invoice_paid",
    )
    assert row.result["subscription_id"] == str(subscription.pk)
    assert f"{event['id']} (invoice.paid): processed" in out.getvalue()
    _assert_invoice_applied_once(user, ids, subscription)
    audit = AdminAuditLog.objects.filter(resource_id=event["id"], action=AuditAction.PROCESS).latest("sequence")
    assert audit.previous_value["status"] == WebhookStatus.UNMATCHED
    assert (audit.new_value["status"], audit.new_value["replay"]) == (WebhookStatus.PROCESSED, True)


def test_unmatched_event_is_processed_when_stripe_delivers_it_again(webhook_client):
    user, ids, event = _invoice_before_its_checkout(webhook_client)
    assert deliver(webhook_client, event).json()["status"] == "unmatched"
    subscription = subscribe_through_checkout(webhook_client, user, ids)

    response = deliver(webhook_client, event)

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["replayed"]) == ("processed", False)
    row = WebhookEvent.objects.get(event_id=event["id"])
    assert (row.status, row.unmatched_reason, row.attempts) == (WebhookStatus.PROCESSED, "", 2)
    _assert_invoice_applied_once(user, ids, subscription)


def test_unmatched_event_is_processed_by_the_console_replay_action(webhook_client, admin_client, admin_user):
    user, ids, event = _invoice_before_its_checkout(webhook_client)
    assert deliver(webhook_client, event).json()["status"] == "unmatched"
    subscription = subscribe_through_checkout(webhook_client, user, ids)
    row = WebhookEvent.objects.get(event_id=event["id"])

    response = admin_client.post(
        reverse("admin:payments_webhookevent_changelist"),
        {"action": "replay_webhook_events", "_selected_action": [str(row.pk)], "apply": "1"},
        follow=True,
    )

    assert response.status_code == 200
    assert [str(message) for message in response.context["messages"]] == [f"{event['id']}: processed"]
    row.refresh_from_db()
    assert (row.status, row.unmatched_reason, row.attempts) == (WebhookStatus.PROCESSED, "", 2)
    _assert_invoice_applied_once(user, ids, subscription)
    # the replay's audit row, and the handler's own, both name the admin who replayed it
    rows = AdminAuditLog.objects.filter(resource_id=event["id"], action=AuditAction.PROCESS, actor=admin_user)
    (replay,) = [row for row in rows if row.new_value.get("replay")]
    assert (replay.previous_value["status"], replay.new_value["status"]) == ("unmatched", "processed")
    assert rows.count() == 2


def renewal_bug(**kwargs):
    """A bug in the renewal's own code (not anything about the event)."""
    raise ZeroDivisionError("division by zero")


@pytest.fixture
def renewal_handler_bug(monkeypatch):
    monkeypatch.setattr("subscriptions.services.billing.invoice_paid", renewal_bug)


def test_a_handler_bug_answers_500_and_keeps_its_error_with_nothing_applied(
    webhook_client, subscriber, renewal_handler_bug
):
    user, subscription, ids = subscriber
    event = renewal_event(subscription, ids.next_invoice())
    before = counts()

    response = deliver(webhook_client, event)

    assert response.status_code == 500
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert (body["code"], body["status"], body["event_id"]) == ("webhook_processing_failed", 500, event["id"])
    assert body["detail"] == "ZeroDivisionError: division by zero"
    row = WebhookEvent.objects.get(event_id=event["id"])
    assert (row.status, row.result, row.attempts, row.processed_at, row.error) == (
        WebhookStatus.FAILED,
        None,
        1,
        None,
        "ZeroDivisionError: division by zero",
    )
    assert counts() == {**before, "WebhookEvent": before["WebhookEvent"] + 1}


@pytest.mark.parametrize(
    "unreadable",
    [
        # `metadata` not an object: the reads made ahead cannot use it
        {"metadata": "operation"},
        # `parent` (where the invoice names its subscription) not an object: nor can the fetcher's
        # read of a known subscription, nor its fetch (this was a 500 internal_error with no row)
        {"parent": "not an object"},
    ],
)
def test_an_invoice_event_its_handlers_cannot_read_is_stored_failed_as_any_failing_event(
    webhook_client, subscriber, unreadable
):
    user, subscription, ids = subscriber
    event = renewal_event(subscription, ids.next_invoice(), **unreadable)
    before = counts()

    response = deliver(webhook_client, event)

    assert response.status_code == 500
    assert response.json()["code"] == "webhook_processing_failed"
    row = WebhookEvent.objects.get(event_id=event["id"])
    assert (row.status, row.attempts) == (WebhookStatus.FAILED, 1)
    assert row.error.startswith("AttributeError")
    assert counts() == {**before, "WebhookEvent": before["WebhookEvent"] + 1}


def test_replay_webhook_reports_an_event_that_fails_again(webhook_client, subscriber, monkeypatch):
    user, subscription, ids = subscriber
    event = renewal_event(subscription, ids.next_invoice())
    monkeypatch.setattr("subscriptions.services.billing.invoice_paid", renewal_bug)
    deliver(webhook_client, event)

    with pytest.raises(CommandError, match="failed again: ZeroDivisionError"):
        call_command("replay_webhook", event["id"])

    row = WebhookEvent.objects.get(event_id=event["id"])
    assert (row.status, row.attempts) == (WebhookStatus.FAILED, 2)
    assert BillingInvoice.objects.filter(user=user).count() == 1


def test_replay_webhook_of_an_unknown_event_is_an_error():
    with pytest.raises(CommandError, match="No stored webhook event evt_nope"):
        call_command("replay_webhook", "evt_nope")


# checkout.session.completed


def test_subscription_checkout_creates_the_paid_subscription_with_its_credits_and_entitlements(webhook_client):
    user = customer_register("buyer@example.com")
    ids = StripeIds.new()

    subscription = subscribe_through_checkout(webhook_client, user, ids)

    assert (subscription.tier, subscription.billing_cycle, subscription.status) == ("pro", "monthly", "active")
    assert (subscription.stripe_customer_id, subscription.checkout_session_id) == (ids.customer, ids.session)
    assert (subscription.base_price_usd, subscription.monthly_credit_allocation) == (Decimal("19.00"), 20_000)
    assert subscription.current_period_end == period_end(subscription.current_period_start, "monthly")
    free = Subscription.objects.get(user=user, tier="free")
    assert free.status == SubscriptionStatus.CANCELLED
    invoice = BillingInvoice.objects.get(user=user)
    assert (invoice.subscription, invoice.stripe_invoice_id, invoice.status) == (subscription, ids.invoice, "paid")
    assert (invoice.amount_due_usd, invoice.amount_paid_usd) == (Decimal("19.00"), Decimal("19.00"))
    assert (invoice.period_start, invoice.period_end) == (
        subscription.current_period_start,
        subscription.current_period_end,
    )
    payment = PaymentTransaction.objects.get(user=user)
    assert (payment.invoice, payment.status, payment.amount_usd) == (invoice, PaymentStatus.SUCCEEDED, Decimal("19.00"))
    allocation = CreditAllocation.objects.get(subscription_id=subscription.pk)
    assert (allocation.source, allocation.amount, allocation.period_start, allocation.expires_at) == (
        CreditSource.SUBSCRIPTION,
        20_000,
        subscription.current_period_start,
        subscription.current_period_end,
    )
    assert balance_of(user) == 2_000 + 20_000
    entitlement = UserEntitlement.objects.get(user=user)
    assert (entitlement.tier, entitlement.entitlements, entitlement.expires_at) == (
        "pro",
        TierConfig.objects.get(tier="pro").entitlements,
        None,
    )


def test_invoice_paid_for_the_checkout_invoice_changes_nothing_more(webhook_client, subscriber):
    user, subscription, ids = subscriber
    start = subscription.current_period_start
    event = stripe_event("invoice.paid", ids, period=(start, start + MONTH), billing_reason="subscription_create")
    before, balance = counts(), balance_of(user)

    response = deliver(webhook_client, event)

    assert response.status_code == 200
    assert (response.json()["result"]["action"], response.json()["result"]["already_recorded"]) == (
        "invoice_paid",
        True,
    )
    # one payment, one payment event: the checkout's
    assert counts() == {
        **before,
        "WebhookEvent": before["WebhookEvent"] + 1,
        "AdminAuditLog": before["AdminAuditLog"] + 1,
    }
    assert BillingInvoice.objects.filter(user=user).count() == 1
    assert CreditAllocation.objects.filter(subscription_id=subscription.pk).count() == 1
    assert balance_of(user) == balance
    refreshed = Subscription.objects.get(pk=subscription.pk)
    assert (refreshed.current_period_start, refreshed.current_period_end, refreshed.status) == (
        subscription.current_period_start,
        subscription.current_period_end,
        "active",
    )


def test_first_payment_of_a_stripe_checkout_can_be_refunded(webhook_client, subscriber):
    # given the checkout, then its invoice (which names the payment intent the refund will name)
    user, subscription, ids = subscriber
    start = subscription.current_period_start
    deliver(
        webhook_client,
        stripe_event(
            "invoice.paid",
            ids,
            period=(start, start + MONTH),
            billing_reason="subscription_create",
            payment_intent=ids.payment_intent,  # how the refund matching finds the payment
        ),
    )

    response = deliver(webhook_client, stripe_event("charge.refunded", ids, amount_refunded=1900, refunded=True))

    assert response.json()["status"] == "processed"
    payment = PaymentTransaction.objects.get(user=user)
    assert (payment.stripe_payment_intent_id, payment.status, payment.refunded_amount_usd) == (
        ids.payment_intent,
        PaymentStatus.REFUNDED,
        Decimal("19.00"),
    )


def test_offline_checkout_and_a_signed_stripe_checkout_give_the_same_subscription(webhook_client, settings):
    # given no trial on Pro, so starting it goes to checkout
    TierConfig.objects.filter(tier="pro").update(trial_days=0)
    offline_user = customer_register("offline@example.com")
    stripe_user = customer_register("stripe@example.com")

    # when one pays through the offline provider, the other through Stripe's signed webhook
    settings.STRIPE_SECRET_KEY = ""
    started = subscription_start(user=offline_user, tier="pro", billing_cycle="monthly")
    subscribe_through_checkout(webhook_client, stripe_user, StripeIds.new())

    # then both hold the same subscription, invoice, payment, credits and entitlements
    assert started.checkout.completed is True

    def outcome(user) -> dict:
        subscription = Subscription.objects.get(user=user, status="active")
        invoice = BillingInvoice.objects.get(user=user)
        payment = PaymentTransaction.objects.get(user=user)
        allocation = CreditAllocation.objects.get(subscription_id=subscription.pk)
        entitlement = UserEntitlement.objects.get(user=user)
        payment_event = PaymentEvent.objects.get(user=user)
        return {
            "subscription": (
                subscription.tier,
                subscription.billing_cycle,
                subscription.status,
                subscription.base_price_usd,
                subscription.monthly_credit_allocation,
                subscription.current_period_end - subscription.current_period_start,
            ),
            "free_subscription": Subscription.objects.get(user=user, tier="free").status,
            "invoice": (invoice.status, invoice.subtotal_usd, invoice.amount_due_usd, invoice.amount_paid_usd),
            "payment": (payment.status, payment.amount_usd, payment.refunded_amount_usd),
            "allocation": (
                allocation.source,
                allocation.amount,
                allocation.expires_at == subscription.current_period_end,
            ),
            "balance": balance_of(user),
            "entitlement": (entitlement.tier, entitlement.entitlements, entitlement.expires_at),
            "payment_event": (
                payment_event.event_type,
                payment_event.plan_code,
                payment_event.amount,
                payment_event.currency,
            ),
        }

    assert outcome(offline_user) == outcome(stripe_user)
    assert outcome(stripe_user)["balance"] == 22_000


# invoice.paid: renewals


def test_cycle_invoice_renews_into_its_line_period_and_allocates_its_credits_once(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    event = renewal_event(subscription, renewal)
    line_period = event["data"]["object"]["lines"]["data"][0]["period"]

    response = deliver(webhook_client, event)

    assert response.status_code == 200
    subscription.refresh_from_db()
    assert (int(subscription.current_period_start.timestamp()), int(subscription.current_period_end.timestamp())) == (
        line_period["start"],
        line_period["end"],
    )
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert response.json()["result"]["current_period_end"] == DjangoJSONEncoder().default(
        subscription.current_period_end
    )
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert (invoice.status, invoice.amount_paid_usd, invoice.description) == ("paid", Decimal("19.00"), "Renewal")
    assert (invoice.period_start, invoice.period_end) == (
        subscription.current_period_start,
        subscription.current_period_end,
    )
    payment = PaymentTransaction.objects.get(invoice=invoice)
    assert payment.status == PaymentStatus.SUCCEEDED
    allocations = CreditAllocation.objects.filter(subscription_id=subscription.pk).order_by("period_start")
    assert [(a.amount, a.period_start) for a in allocations][1:] == [(20_000, subscription.current_period_start)]
    assert allocations.count() == 2
    assert balance_of(user) == 2_000 + 20_000 + 20_000


def test_a_renewal_is_recorded_by_the_inbox_and_the_audit_chain_not_by_the_object_history(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    history_before = LogEntry.objects.count()

    response = deliver(webhook_client, renewal_event(subscription, renewal))

    assert response.status_code == 200
    assert LogEntry.objects.count() == history_before
    event_id = response.json()["event_id"]
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert PaymentEvent.objects.get(invoice_id=renewal.invoice).webhook_event.event_id == event_id
    renewed = AdminAuditLog.objects.get(resource_id=str(subscription.pk), action=AuditAction.UPDATE)
    assert renewed.new_value["current_period_start"] == invoice.period_start.isoformat().replace("+00:00", "Z")
    assert AdminAuditLog.objects.filter(resource_id=event_id, action=AuditAction.PROCESS).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_renewals_last_round_trip_carries_its_commit_and_its_answer_is_cached_after_it(webhook_client, subscriber):
    user, subscription, ids = subscriber
    deliver(webhook_client, renewal_event(subscription, ids.next_invoice()))  # the statements, prepared once
    subscription.refresh_from_db()
    event, balance = renewal_event(subscription, ids.next_invoice()), balance_of(user)
    responses = []

    sent = queries_sent(lambda: responses.append(deliver(webhook_client, event)))

    assert responses[0].status_code == 200
    assert responses[0].json()["status"] == "processed"
    sent = [query for query in sent if "PREPARE" not in query and "DEALLOCATE" not in query]
    carried = [position for position, query in enumerate(sent) if query.endswith('; COMMIT"')]
    # Its fourth round trip, with no COMMIT of its own (the audit sealer's transaction follows it);
    # the credit grant's writes go in it too, ahead of the rows appended.
    assert carried == [3]
    assert '"COMMIT"' not in sent[:4]
    # (the trace shows prepared statements by name: the rows by their fields, the allocation's and
    # its grant's, before the stored event's)
    assert sent[3].index('"applied_to_balance_at"') < sent[3].index('"original_amount"') < sent[3].index('"raw_body"')
    assert balance_of(user) == balance + 20_000
    assert cache.get(_finished_key(event["id"]))["status"] == "processed"


@pytest.fixture
def renewal_delivered(webhook_client, subscriber):
    """A renewal of the subscriber's subscription delivered: its user, the response and the statements
    the delivery sent (less the savepoints the test's own transaction turns the inbox's into)."""
    user, subscription, ids = subscriber
    with CaptureQueriesContext(connection) as queries:
        response = deliver(webhook_client, renewal_event(subscription, ids.next_invoice()))
    return user, response, [query["sql"] for query in queries.captured_queries if "SAVEPOINT" not in query["sql"]]


@pytest.mark.postgres
def test_a_renewals_appended_rows_go_with_its_stored_event_in_one_statement_and_a_new_invoice_has_no_dunning_to_stop(
    renewal_delivered,
):
    user, response, statements = renewal_delivered

    assert response.status_code == 200
    appended = (
        'INSERT INTO "billing_project_outboundevent"',
        'INSERT INTO "audit_adminauditlog"',
        'INSERT INTO "payments_paymentevent"',
    )
    # The event's row is written once, with its outcome; the subscription's note of the newest
    # event applied goes with it.
    (outcome,) = [statement for statement in statements if 'INSERT INTO "payments_webhookevent"' in statement]
    assert all(insert in outcome for insert in appended)
    assert 'UPDATE "subscriptions_subscription" SET "provider_updated_at"' in outcome
    assert not [statement for statement in statements if 'UPDATE "payments_webhookevent"' in statement]
    assert not [statement for statement in statements if statement.startswith(appended)]
    assert not [statement for statement in statements if '"subscriptions_dunningattempt"' in statement]
    assert OutboundEvent.objects.filter(user=user).count() >= 3
    # Its audit rows are written with the answer it got: no transaction afterwards to fill it in.
    assert not [statement for statement in statements if 'UPDATE "audit_adminauditlog" SET "status_code"' in statement]
    assert set(AdminAuditLog.objects.values_list("status_code", flat=True)) == {200}


@pytest.mark.postgres
def test_a_renewals_new_invoice_and_its_payment_are_inserted_in_one_round_trip(renewal_delivered):
    user, response, statements = renewal_delivered

    assert response.status_code == 200
    (inserts,) = [statement for statement in statements if 'INSERT INTO "subscriptions_billinginvoice"' in statement]
    assert 'INSERT INTO "payments_payment"' in inserts
    assert not [statement for statement in statements if statement.startswith('INSERT INTO "payments_payment"')]
    invoice = BillingInvoice.objects.get(user=user, pk=response.json()["result"]["invoice_id"])
    payment = Payment.objects.get(stripe_invoice_id=invoice.stripe_invoice_id)
    assert (payment.amount, payment.user_id) == (invoice.amount_paid, user.pk)


@pytest.mark.postgres
def test_a_renewal_reads_its_event_its_subscription_and_its_handlers_first_reads_in_its_transactions_first_round_trip(
    renewal_delivered,
):
    _, response, statements = renewal_delivered

    assert response.status_code == 200
    first = statements[0]
    # In one round trip: the event's lock, its stored row if any, its object's version row, whether
    # its subscription is known here (else Stripe is read first), and the handlers' first reads (an
    # operation owning the invoice, the subscription locked).
    assert first.startswith("SELECT pg_advisory_xact_lock(")
    assert 'FROM "payments_webhookevent" WHERE "provider" = ' in first
    assert 'INSERT INTO "payments_providerobjectversion"' in first
    assert 'SELECT 1 FROM "subscriptions_subscription" WHERE stripe_subscription_id = ' in first
    subscription_locked = "LIMIT 1 FOR NO KEY UPDATE"
    assert 'FROM "payments_paymentoperation" WHERE' in first and subscription_locked in first
    assert [statement for statement in statements if subscription_locked in statement] == [first]
    assert [statement for statement in statements if 'FROM "payments_paymentoperation"' in statement] == [first]
    # No event recorded its money, so its payment is inserted without being looked up first.
    assert not [statement for statement in statements if 'FROM "payments_payment" WHERE' in statement]


def test_a_renewal_whose_payment_is_recorded_without_an_event_of_its_money_completes_that_payment(
    webhook_client, subscriber
):
    # given: the renewal's payment known by its invoice only (as a charge of our own records it)
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    event = renewal_event(subscription, renewal)
    recorded = payment_record(
        kind="renewal_charge",
        user=user,
        amount=event["data"]["object"]["amount_paid"],
        currency="usd",
        provider="stripe",
        stripe_invoice_id=renewal.invoice,
    )

    response = deliver(webhook_client, event)

    assert response.status_code == 200, response.content
    (payment,) = Payment.objects.filter(stripe_invoice_id=renewal.invoice)
    assert payment.pk == recorded.pk
    assert payment.object_id == str(subscription.pk)  # what it lacked, from the renewal
    assert PaymentEvent.objects.filter(event_type="invoice_paid", invoice_id=renewal.invoice).count() == 1


@pytest.mark.parametrize("accept", ["*/*; q=0.5, application/xml", "text/html"])
def test_a_delivery_is_answered_in_json_whatever_its_accept_header(webhook_client, subscriber, accept):
    _, subscription, ids = subscriber
    payload = json.dumps(renewal_event(subscription, ids.next_invoice()))

    response = webhook_client.post(
        WEBHOOK_URL,
        data=payload,
        content_type="application/json",
        HTTP_ACCEPT=accept,
        HTTP_STRIPE_SIGNATURE=signature_header(payload),
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["result"]["action"] == "invoice_paid"


@pytest.mark.parametrize("again", ["same_event_replayed", "invoice_payment_succeeded"])
def test_renewal_delivered_again_changes_nothing(webhook_client, subscriber, again):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    event = renewal_event(subscription, renewal)
    deliver(webhook_client, event)
    subscription.refresh_from_db()
    before, balance = counts(), balance_of(user)
    if again == "invoice_payment_succeeded":
        event = {**event, "id": f"{event['id']}_succeeded", "type": "invoice.payment_succeeded"}

    response = deliver(webhook_client, event)

    assert response.status_code == 200
    changed = counts()
    if again == "invoice_payment_succeeded":  # a new event: its own row and audit row, the same payment
        assert response.json()["replayed"] is False
        assert response.json()["result"]["already_recorded"] is True
        for table in ("WebhookEvent", "AdminAuditLog"):
            changed[table] -= 1
    assert changed == before
    assert balance_of(user) == balance
    refreshed = Subscription.objects.get(pk=subscription.pk)
    assert (refreshed.current_period_start, refreshed.current_period_end) == (
        subscription.current_period_start,
        subscription.current_period_end,
    )
    assert BillingInvoice.objects.filter(stripe_invoice_id=renewal.invoice).count() == 1


def test_a_newer_event_of_a_paid_invoice_corrects_its_amounts_without_moving_money_and_an_older_one_does_not(
    webhook_client, subscriber
):
    # given a renewal recorded as paid 19.00
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    now = timezone.now()
    deliver(webhook_client, renewal_event(subscription, renewal, created=now - timedelta(minutes=2)))
    money = list(PaymentEvent.objects.filter(invoice_id=renewal.invoice).values_list("event_type", "amount"))
    assert money == [("invoice_paid", 1900)]

    # when Stripe's newer word on the invoice is 15.00 (a discount we never saw), then an older one 17.00
    corrected = {"amount_due": 1500, "amount_paid": 1500, "total": 1500, "subtotal": 1500}
    newer = deliver(
        webhook_client, renewal_event(subscription, renewal, event_type="invoice.payment_succeeded", **corrected)
    )
    older = {"amount_due": 1700, "amount_paid": 1700, "total": 1700, "subtotal": 1700}
    stale = deliver(webhook_client, renewal_event(subscription, renewal, created=now - timedelta(minutes=1), **older))

    # then the invoice and its payments say what Stripe charged; no money moved, so no payment event
    assert newer.json()["result"]["amounts_corrected"] == {"amount_due": [1900, 1500], "amount_paid": [1900, 1500]}
    assert stale.json()["result"]["action"] == "stale_event_skipped"
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert (invoice.amount_due, invoice.amount_paid, invoice.amount_paid_usd, invoice.subtotal_usd) == (
        1500,
        1500,
        Decimal("15.00"),
        Decimal("15.00"),
    )
    payment = PaymentTransaction.objects.get(invoice=invoice)
    assert (payment.amount, payment.amount_usd) == (1500, Decimal("15.00"))
    assert Payment.objects.get(stripe_invoice_id=renewal.invoice).amount == 1500
    assert list(PaymentEvent.objects.filter(invoice_id=renewal.invoice).values_list("event_type", "amount")) == money
    audited = AdminAuditLog.objects.filter(resource_type="subscriptions.billinginvoice", resource_id=str(invoice.pk))
    assert audited.filter(action=AuditAction.UPDATE, previous_value__amount_paid=1900).exists()


# invoice.payment_failed: dunning


def _failed_renewal(webhook_client, subscription, ids, attempt_count=1):
    return deliver(
        webhook_client,
        renewal_event(subscription, ids, name="invoice.payment_failed", attempt_count=attempt_count),
    )


def test_failed_payment_moves_to_past_due_and_schedules_four_retries(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    failed_at = timezone.now().replace(microsecond=0)

    with time_machine.travel(failed_at, tick=False):
        response = _failed_renewal(webhook_client, subscription, renewal)

    assert response.status_code == 200
    assert response.json()["result"]["subscription_status"] == "past_due"
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.PAST_DUE
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert (invoice.status, invoice.amount_due_usd, invoice.amount_paid_usd) == (
        InvoiceStatus.OPEN,
        Decimal("19.00"),
        Decimal("0.00"),
    )
    payment = PaymentTransaction.objects.get(invoice=invoice)
    assert payment.status == PaymentStatus.FAILED
    assert "attempt 1" in payment.failure_reason
    attempts = DunningAttempt.objects.filter(invoice=invoice).order_by("attempt_number")
    assert [(a.attempt_number, a.scheduled_at - failed_at, a.result) for a in attempts] == [
        (1, timedelta(days=1), DunningResult.SCHEDULED),
        (2, timedelta(days=3), DunningResult.SCHEDULED),
        (3, timedelta(days=5), DunningResult.SCHEDULED),
        (4, timedelta(days=7), DunningResult.SCHEDULED),
    ]
    assert PaymentEvent.objects.filter(event_type="invoice_payment_failed", invoice_id=renewal.invoice).count() == 1
    # the period is not renewed, nor credited, while unpaid
    assert CreditAllocation.objects.filter(subscription_id=subscription.pk).count() == 1


def test_second_failure_of_the_same_invoice_adds_no_retries(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    _failed_renewal(webhook_client, subscription, renewal)

    response = _failed_renewal(webhook_client, subscription, renewal, attempt_count=2)

    assert response.status_code == 200
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.PAST_DUE
    assert DunningAttempt.objects.filter(invoice__stripe_invoice_id=renewal.invoice).count() == 4
    assert BillingInvoice.objects.filter(stripe_invoice_id=renewal.invoice).count() == 1
    payment = PaymentTransaction.objects.filter(invoice__stripe_invoice_id=renewal.invoice).latest("created_at")
    assert (payment.status, "attempt 2" in payment.failure_reason) == (PaymentStatus.FAILED, True)


def test_paying_the_failed_invoice_restores_the_subscription_and_cancels_its_retries(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    _failed_renewal(webhook_client, subscription, renewal)
    old_end = subscription.current_period_end

    response = deliver(webhook_client, renewal_event(subscription, renewal))

    assert response.status_code == 200
    assert response.json()["result"]["subscription_status"] == "active"
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert int(subscription.current_period_start.timestamp()) == int(old_end.timestamp())
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert (invoice.status, invoice.amount_paid_usd) == (InvoiceStatus.PAID, Decimal("19.00"))
    # each attempt is kept: the failed one, then the payment
    payments = PaymentTransaction.objects.filter(invoice=invoice).order_by("created_at")
    assert [(payment.status, payment.failure_reason != "") for payment in payments] == [
        (PaymentStatus.FAILED, True),
        (PaymentStatus.SUCCEEDED, False),
    ]
    assert set(DunningAttempt.objects.filter(invoice=invoice).values_list("result", flat=True)) == {
        DunningResult.CANCELLED
    }
    assert DunningAttempt.objects.filter(invoice=invoice).count() == 4
    assert CreditAllocation.objects.filter(subscription_id=subscription.pk).count() == 2
    assert UserEntitlement.objects.get(user=user).tier == "pro"


def test_failure_reported_after_the_invoice_was_paid_changes_nothing(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    paid = renewal_event(subscription, renewal)
    failed = renewal_event(subscription, renewal, name="invoice.payment_failed")
    deliver(webhook_client, paid)
    subscription.refresh_from_db()
    before = counts()

    response = deliver(webhook_client, failed)

    assert response.status_code == 200
    assert response.json()["result"]["subscription_status"] == "active"
    assert Subscription.objects.get(pk=subscription.pk).status == SubscriptionStatus.ACTIVE
    assert BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice).status == InvoiceStatus.PAID
    payment = PaymentTransaction.objects.get(invoice__stripe_invoice_id=renewal.invoice)
    assert (payment.status, payment.failure_reason) == (PaymentStatus.SUCCEEDED, "")
    assert not DunningAttempt.objects.exists()
    changed = counts()
    for table in ("WebhookEvent", "PaymentEvent", "AdminAuditLog"):
        changed[table] -= 1
    assert changed == before


def test_an_invoice_paid_after_its_failure_records_its_payment_once_against_the_invoice_already_there(
    webhook_client, subscriber
):
    # given: the renewal's invoice written open by its failure (its payment is then not tried with it)
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    deliver(webhook_client, renewal_event(subscription, renewal, name="invoice.payment_failed"))
    subscription.refresh_from_db()
    assert not Payment.objects.filter(stripe_invoice_id=renewal.invoice).exists()

    response = deliver(webhook_client, renewal_event(subscription, renewal))

    assert response.status_code == 200, response.content
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert invoice.status == InvoiceStatus.PAID
    (payment,) = Payment.objects.filter(stripe_invoice_id=renewal.invoice)
    assert (payment.amount, payment.user_id, payment.object_id) == (invoice.amount_paid, user.pk, str(subscription.pk))
    announced = OutboundEvent.objects.filter(type="payment.succeeded", subject=f"payment:{payment.pk}")
    assert announced.count() == 1


def test_invoice_in_stripes_older_layout_names_its_subscription_at_the_top(webhook_client, subscriber):
    # given an invoice as API versions before 2025 shape it: `subscription`, no `parent`
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    event = renewal_event(subscription, renewal, parent=None, subscription=ids.subscription)

    response = deliver(webhook_client, event)

    assert response.json()["result"]["subscription_id"] == str(subscription.pk)
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert (invoice.subscription, invoice.status) == (subscription, InvoiceStatus.PAID)
    assert CreditAllocation.objects.filter(subscription_id=subscription.pk).count() == 2


def test_invoice_of_no_subscription_and_no_payment_of_ours_is_acknowledged_as_unmatched(webhook_client):
    ids = StripeIds.new()
    before = counts()

    response = deliver(webhook_client, stripe_event("invoice.paid", ids, parent=None))

    assert (response.status_code, response.json()["status"]) == (200, "unmatched")
    assert response.json()["result"]["reason"] == f"Invoice {ids.invoice} names no subscription and no payment of ours."
    assert counts() == {**before, "WebhookEvent": before["WebhookEvent"] + 1}


# customer.subscription.deleted


def test_deleted_subscription_is_cancelled_and_the_user_is_back_on_free(webhook_client, subscriber):
    user, subscription, ids = subscriber

    response = deliver(webhook_client, stripe_event("customer.subscription.deleted", ids))

    assert response.status_code == 200
    assert response.json()["result"] == {"action": "subscription_cancelled", "subscription_id": str(subscription.pk)}
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.CANCELLED
    assert subscription.cancelled_at is not None
    live = Subscription.objects.get(user=user, status__in=["active", "trial", "past_due"])
    assert (live.tier, live.status, live.monthly_credit_allocation) == ("free", "active", 2_000)
    assert CreditAllocation.objects.filter(subscription_id=live.pk, source=CreditSource.SUBSCRIPTION).count() == 1
    entitlement = UserEntitlement.objects.get(user=user)
    assert (entitlement.tier, entitlement.entitlements) == ("free", TierConfig.objects.get(tier="free").entitlements)
    assert PaymentEvent.objects.filter(event_type="subscription_deleted", subscription_id=ids.subscription).count() == 1


def test_update_older_than_the_deletion_does_not_revive_the_subscription(webhook_client, subscriber):
    user, subscription, ids = subscriber
    now = timezone.now()
    deliver(webhook_client, stripe_event("customer.subscription.deleted", ids, created=now))

    late = deliver(
        webhook_client, stripe_event("customer.subscription.updated", ids, created=now - timedelta(minutes=1))
    )

    assert late.json()["result"]["action"] == "stale_event_skipped"
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.CANCELLED
    assert UserEntitlement.objects.get(user=user).tier == "free"


# charge.refunded


def test_refunds_are_recorded_partial_then_full(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    deliver(webhook_client, renewal_event(subscription, renewal, payment_intent=renewal.payment_intent))

    partial = deliver(webhook_client, stripe_event("charge.refunded", renewal, amount_refunded=500))

    assert partial.json()["result"] | {"payment_id": None} == {
        "action": "refund_recorded",
        "payment_id": None,
        "kind": "renewal_charge",
        "amount": 1900,
        "currency": "usd",
        "amount_refunded": 500,
        "status": "partially_refunded",
        "dispute_status": "",
        "effect": None,
    }
    payment = PaymentTransaction.objects.get(stripe_payment_intent_id=renewal.payment_intent)
    assert (payment.status, payment.refunded_amount_usd, payment.stripe_charge_id) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        Decimal("5.00"),
        renewal.charge,
    )

    full = deliver(webhook_client, stripe_event("charge.refunded", renewal, amount_refunded=1900, refunded=True))

    assert full.status_code == 200
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount_usd) == (PaymentStatus.REFUNDED, Decimal("19.00"))
    # One payment event per movement of money: 5.00, then the 14.00 that made it full.
    refunds = PaymentEvent.objects.filter(event_type="refund", user=user).order_by("created_at")
    assert [event.amount for event in refunds] == [500, 1400]


def test_refund_of_a_payment_that_is_not_ours_is_acknowledged_as_unmatched_only(webhook_client):
    before = counts()

    response = deliver(webhook_client, stripe_event("charge.refunded", StripeIds.new()))

    assert response.status_code == 200
    assert response.json()["status"] == "unmatched"
    assert response.json()["result"]["reason"].startswith("No payment here for charge ")
    assert counts() == {**before, "WebhookEvent": before["WebhookEvent"] + 1}
