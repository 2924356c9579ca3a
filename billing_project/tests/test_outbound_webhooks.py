"""Outbound webhooks (Standard Webhooks): signed events sent after the change commits, retried with
backoff for about three days, in order per subject, each with a stable webhook-id; endpoints that
fail for days disabled with one staff notification; resend from the console and the staff API."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
import time_machine
from auditlog.models import LogEntry
from django.apps import apps
from django.core import mail
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from audit.models import AdminAuditLog
from billing_project import webhook_delivery
from billing_project.enums import EventType
from billing_project.models import DeliveryStatus, Notification, OutboundEvent, WebhookDelivery, WebhookEndpoint
from billing_project.outbound import event_emit, notify
from billing_project.roles import roles_sync
from billing_project.tasks import webhook_deliveries_send_due
from billing_project.tests.test_authorization_walk import staff_member
from billing_project.webhook_endpoints import endpoint_create
from conftest import run_concurrently

pytestmark = pytest.mark.django_db


class Receiver:
    """A webhook receiver on 127.0.0.1 that verifies each request with the standardwebhooks library,
    as a customer's would, and answers `status` (changeable while it runs)."""

    def __init__(self):
        self.status = 204
        self.delay = 0.0
        self.secret = None
        self.requests = []  # (webhook-id, answered status, verified payload or None)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers))
                except Exception:
                    payload = None
                if receiver.delay:
                    threading.Event().wait(receiver.delay)
                status = receiver.status
                with receiver._lock:
                    receiver.requests.append((self.headers["webhook-id"], status, payload, dict(self.headers)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered_ids(self) -> list[str]:
        return [webhook_id for webhook_id, status, _, _ in self.requests if 200 <= status < 300]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def endpoint(receiver, staff_user):
    created = endpoint_create(actor=staff_user, url=receiver.url, description="the web app")
    receiver.secret = created.secret
    return created


def emit(capture, *, type=EventType.CREDITS_GRANTED, subject="user:1", data=None) -> OutboundEvent:
    """An event emitted in a committed change: its deliveries start after commit, as in production."""
    with capture(execute=True), transaction.atomic():
        return event_emit(type=type, subject=subject, data=data or {"amount": 500})


def send_due(capture):
    with capture(execute=True):
        return webhook_deliveries_send_due()


def test_the_signature_verifies_with_the_standardwebhooks_library_against_the_endpoints_secret(
    receiver, endpoint, django_capture_on_commit_callbacks
):
    event = emit(django_capture_on_commit_callbacks, data={"amount": 500, "balance_after": 700})

    ((webhook_id, status, payload, headers),) = receiver.requests
    assert payload is not None, "the standardwebhooks library refused the signature"
    assert webhook_id == str(event.pk)
    assert payload["type"] == "credits.granted"
    assert payload["data"] == {"amount": 500, "balance_after": 700}
    assert payload["subject"] == "user:1"
    assert payload["timestamp"].endswith("Z")
    assert headers["Content-Type"] == "application/json"
    assert endpoint.secret.startswith("whsec_")
    delivery = WebhookDelivery.objects.get(event=event)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.DELIVERED, 1, 204)
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 32).verify(json.dumps(payload), headers)


def test_a_receiver_down_for_a_while_then_up_gets_every_event_once_with_the_same_ids_in_order_per_subject(
    receiver, endpoint, django_capture_on_commit_callbacks
):
    receiver.status = 503
    with time_machine.travel(timezone.now(), tick=False) as clock:
        first = emit(django_capture_on_commit_callbacks, subject="subscription:A", data={"n": 1})
        clock.shift(timedelta(milliseconds=1))
        second = emit(django_capture_on_commit_callbacks, subject="subscription:A", data={"n": 2})
        other = emit(django_capture_on_commit_callbacks, subject="subscription:B", data={"n": 3})
        # The second event of subject A waits behind the first: only A's first and B's were tried.
        assert [request[0] for request in receiver.requests] == [str(first.pk), str(other.pk)]

        clock.shift(timedelta(seconds=6))
        send_due(django_capture_on_commit_callbacks)  # the 5 s retries, still down
        clock.shift(timedelta(minutes=1))
        assert send_due(django_capture_on_commit_callbacks) == {}  # nothing due before the 5 min retry

        receiver.status = 200
        clock.shift(timedelta(minutes=6))
        send_due(django_capture_on_commit_callbacks)
        clock.shift(timedelta(hours=1))
        send_due(django_capture_on_commit_callbacks)

    delivered = receiver.delivered_ids()
    assert sorted(delivered) == sorted([str(first.pk), str(second.pk), str(other.pk)])  # each exactly once
    assert delivered.index(str(first.pk)) < delivered.index(str(second.pk))
    attempts_of_first = [request for request in receiver.requests if request[0] == str(first.pk)]
    assert [status for _, status, _, _ in attempts_of_first] == [503, 503, 200]
    assert all(payload is not None for _, _, payload, _ in receiver.requests)  # every attempt signed afresh
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).failing_since is None


def test_an_event_is_never_sent_for_a_rolled_back_change(receiver, endpoint, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        event_emit(type=EventType.CREDITS_GRANTED, subject="user:1", data={"amount": 500})
        raise RuntimeError("the change failed")

    send_due(django_capture_on_commit_callbacks)

    assert not OutboundEvent.objects.exists()
    assert not WebhookDelivery.objects.exists()
    assert receiver.requests == []


def test_backoff_gives_up_after_about_three_days_and_the_delivery_fails(
    receiver, endpoint, django_capture_on_commit_callbacks
):
    receiver.status = 500
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        event = emit(django_capture_on_commit_callbacks)
        delivery = WebhookDelivery.objects.get(event=event)
        first_retry = delivery.next_attempt_at - start
        for _ in range(4 * 24 * 2):  # the beat job every 30 minutes for four days
            clock.shift(timedelta(minutes=30))
            send_due(django_capture_on_commit_callbacks)

    delivery.refresh_from_db()
    assert timedelta(seconds=4) <= first_retry <= timedelta(seconds=6)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (DeliveryStatus.FAILED, 12, None)
    assert timedelta(days=2.5) < delivery.last_attempt_at - start < timedelta(days=3.1)
    assert len(receiver.requests) == 12
    assert {request[0] for request in receiver.requests} == {str(event.pk)}
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).is_active  # failing, not yet for five days


def test_an_endpoint_failing_for_days_is_disabled_and_staff_are_told_once(
    settings, receiver, endpoint, django_capture_on_commit_callbacks
):
    settings.STAFF_NOTIFICATION_EMAILS = ["ops@example.com"]
    receiver.status = 500
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        emit(django_capture_on_commit_callbacks, subject="user:1")
        clock.shift(timedelta(days=4))
        emit(django_capture_on_commit_callbacks, subject="user:2")  # fails: four days, still enabled
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).is_active
        clock.shift(timedelta(days=1, hours=1))
        late = emit(django_capture_on_commit_callbacks, subject="user:3")  # fails past five days
        clock.shift(timedelta(hours=1))
        send_due(django_capture_on_commit_callbacks)
        after = emit(django_capture_on_commit_callbacks, subject="user:4")

    endpoint.refresh_from_db()
    assert not endpoint.is_active
    assert endpoint.disabled_at is not None and "5 days" in endpoint.disabled_reason
    assert not WebhookDelivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.PENDING).exists()
    assert WebhookDelivery.objects.get(event=late).status == DeliveryStatus.FAILED
    assert not WebhookDelivery.objects.filter(event=after).exists()  # a disabled endpoint gets nothing new
    (notification,) = Notification.objects.filter(kind=EventType.WEBHOOK_ENDPOINT_DISABLED)
    assert notification.user is None and notification.context["url"] == endpoint.url
    (message,) = mail.outbox
    assert message.to == ["ops@example.com"]
    assert endpoint.url in message.subject and endpoint.url in message.body
    assert endpoint.url in message.alternatives[0][0]


def test_a_success_clears_the_endpoints_failure_record(receiver, endpoint, django_capture_on_commit_callbacks):
    receiver.status = 500
    with time_machine.travel(timezone.now(), tick=False) as clock:
        emit(django_capture_on_commit_callbacks)
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).failing_since is not None
        receiver.status = 200
        clock.shift(timedelta(seconds=10))
        send_due(django_capture_on_commit_callbacks)

    assert WebhookEndpoint.objects.get(pk=endpoint.pk).failing_since is None


def test_resend_from_the_console_sends_the_same_webhook_id_again_and_is_audited(
    receiver, endpoint, django_capture_on_commit_callbacks
):
    event = emit(django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get(event=event)
    console = Client()
    console.force_login(staff_member("superuser"))

    with django_capture_on_commit_callbacks(execute=True):
        response = console.post(
            "/admin/billing_project/webhookdelivery/",
            {"action": "resend_deliveries", "_selected_action": [str(delivery.pk)]},
        )

    assert response.status_code == 302
    assert receiver.delivered_ids() == [str(event.pk), str(event.pk)]
    assert receiver.requests[1][2] is not None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 1)
    row = AdminAuditLog.objects.get(resource_type="billing_project.webhookdelivery")
    assert (row.action, row.resource_id, row.new_value["status"]) == ("process", str(delivery.pk), "pending")


def test_the_console_shows_a_new_endpoints_secret_once_then_masked_and_disables_it_audited(
    django_capture_on_commit_callbacks,
):
    console = Client()
    console.force_login(staff_member("superuser"))

    created = console.post(
        "/admin/billing_project/webhookendpoint/add/",
        {"url": "https://app.example.com/hooks", "description": "web app", "event_types": ["credits", "invoice.paid"]},
        follow=True,
    )
    endpoint = WebhookEndpoint.objects.get()
    change_page = console.get(f"/admin/billing_project/webhookendpoint/{endpoint.pk}/change/")
    with django_capture_on_commit_callbacks(execute=True):
        console.post(
            "/admin/billing_project/webhookendpoint/",
            {"action": "disable_endpoints", "_selected_action": [str(endpoint.pk)]},
        )

    assert endpoint.secret in created.content.decode()
    assert (endpoint.event_types, endpoint.description) == (["credits", "invoice.paid"], "web app")
    assert endpoint.secret not in change_page.content.decode()
    assert endpoint.secret[:10] in change_page.content.decode()
    endpoint.refresh_from_db()
    assert not endpoint.is_active and endpoint.disabled_at is not None
    rows = AdminAuditLog.objects.filter(resource_type="billing_project.webhookendpoint").order_by("timestamp")
    assert [row.action for row in rows] == ["create", "deactivate"]
    assert rows[0].new_value["secret"] == "[redacted]"
    assert all("secret" not in entry.changes_dict for entry in LogEntry.objects.get_for_object(endpoint))


def test_endpoints_receive_only_the_event_types_and_families_they_chose(staff_user, django_capture_on_commit_callbacks):
    families = endpoint_create(actor=staff_user, url="https://a.example.com/hooks", event_types=["credits"])
    one_type = endpoint_create(actor=staff_user, url="https://b.example.com/hooks", event_types=["invoice.paid"])
    everything = endpoint_create(actor=staff_user, url="https://c.example.com/hooks")

    with transaction.atomic():
        credits = event_emit(type=EventType.CREDITS_BALANCE_LOW, subject="user:1", data={})
        invoice = event_emit(type=EventType.INVOICE_PAID, subject="invoice:1", data={})
        license_event = event_emit(type=EventType.LICENSE_CREATED, subject="license:1", data={})

    def receivers_of(event):
        return set(WebhookDelivery.objects.filter(event=event).values_list("endpoint_id", flat=True))

    assert receivers_of(credits) == {families.pk, everything.pk}
    assert receivers_of(invoice) == {one_type.pk, everything.pk}
    assert receivers_of(license_event) == {everything.pk}


def test_an_event_is_written_and_its_endpoints_read_in_one_round_trip_on_postgresql(staff_user):
    endpoint_create(actor=staff_user, url="https://a.example.com/hooks", event_types=["credits"])
    inactive = endpoint_create(actor=staff_user, url="https://b.example.com/hooks")
    WebhookEndpoint.objects.filter(pk=inactive.pk).update(is_active=False)

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        event = event_emit(type=EventType.INVOICE_PAID, subject="invoice:1", data={"amount": "19.00"})

    assert len(queries) == (1 if connection.vendor == "postgresql" else 2)
    stored = OutboundEvent.objects.get(pk=event.pk)
    assert (stored.type, stored.subject, stored.data, stored.created_at) == (
        "invoice.paid",
        "invoice:1",
        {"amount": "19.00"},
        event.created_at,
    )
    assert not WebhookDelivery.objects.exists()  # one endpoint wants credits only, the other is off


def test_notify_tells_one_occurrence_once_with_one_email_and_one_event(
    settings, django_capture_on_commit_callbacks, user
):
    settings.STAFF_NOTIFICATION_EMAILS = ["ops@example.com"]
    context = {
        "endpoint_id": "e1",
        "url": "https://x.example.com/",
        "failing_since": "",
        "disabled_at": "",
        "reason": "",
    }

    with django_capture_on_commit_callbacks(execute=True):
        first = notify(user=None, kind=EventType.WEBHOOK_ENDPOINT_DISABLED, occurrence="e1:1", context=context)
    with django_capture_on_commit_callbacks(execute=True):
        again = notify(user=None, kind=EventType.WEBHOOK_ENDPOINT_DISABLED, occurrence="e1:1", context=context)

    assert first is not None and again is None
    assert Notification.objects.count() == 1
    assert OutboundEvent.objects.filter(type=EventType.WEBHOOK_ENDPOINT_DISABLED).count() == 1
    assert len(mail.outbox) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_workers_claiming_the_same_due_delivery_concurrently_send_it_once(receiver, staff_user):
    endpoint = endpoint_create(actor=staff_user, url=receiver.url)
    receiver.secret = endpoint.secret
    receiver.delay = 0.3  # the first claimant is still sending while the others look
    # Rows written directly: the eager after-commit task would otherwise send before the workers start.
    event = OutboundEvent.objects.create(type=EventType.CREDITS_GRANTED, subject="user:1", data={"amount": 1})
    WebhookDelivery.objects.create(endpoint=endpoint, event=event, next_attempt_at=timezone.now())

    open_transactions = []
    post = webhook_delivery._post

    def post_recording_transactions(**kwargs):
        open_transactions.append(connection.in_atomic_block)
        return post(**kwargs)

    with mock.patch.object(webhook_delivery, "_post", post_recording_transactions):
        results = run_concurrently(lambda _: webhook_deliveries_send_due(), list(range(4)))

    assert all(not isinstance(result, Exception) for result in results), results
    assert open_transactions == [False]  # one call, and no transaction open during it
    assert receiver.delivered_ids() == [str(event.pk)]
    delivery = WebhookDelivery.objects.get(event=event)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 1)
    assert sum(result.get("delivered", 0) for result in results) == 1


# The staff API


@pytest.fixture
def roles_with_webhooks():
    """The role groups as the next roles migration leaves them (the tables name the webhook models)."""
    roles_sync(apps=apps)


ENDPOINTS = "/api/v1/admin/webhook-endpoints/"


def test_staff_register_an_endpoint_and_see_its_secret_once(roles_with_webhooks, staff_client):
    created = staff_client.post(
        ENDPOINTS,
        {"url": "https://app.example.com/hooks", "description": "web app", "event_types": ["credits", "invoice.paid"]},
        format="json",
    )
    listed = staff_client.get(ENDPOINTS)

    assert created.status_code == 201, created.json()
    body = created.json()
    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    assert body["secret"] == endpoint.secret and endpoint.secret.startswith("whsec_")
    assert (endpoint.url, endpoint.event_types, endpoint.is_active) == (
        "https://app.example.com/hooks",
        ["credits", "invoice.paid"],
        True,
    )
    (shown,) = listed.json()["results"]
    assert "secret" not in shown and shown["secret_hint"] == endpoint.secret[:10] + "…"
    row = AdminAuditLog.objects.get(resource_type="billing_project.webhookendpoint", action="create")
    assert row.new_value["secret"] == "[redacted]"
    assert endpoint.secret not in json.dumps(row.request_body or {})


def test_an_unknown_event_type_is_a_400_problem_and_nothing_is_registered(roles_with_webhooks, staff_client):
    response = staff_client.post(
        ENDPOINTS, {"url": "https://app.example.com/hooks", "event_types": ["credits.stolen"]}, format="json"
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert "event_types" in response.json()["errors"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hooks",
        "https://localhost/hooks",
        "https://10.0.0.7/hooks",
        "https://192.168.1.20/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "https://[::1]/hooks",
        "https://[::ffff:127.0.0.1]/hooks",
        "ftp://files.example.com/hooks",
    ],
)
def test_an_endpoint_on_this_machine_or_a_private_network_is_refused_and_nothing_is_registered(
    roles_with_webhooks, staff_client, settings, url
):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False

    response = staff_client.post(ENDPOINTS, {"url": url}, format="json")

    assert response.status_code == 422, response.json()
    assert response.json()["code"] == "webhook_endpoint_invalid"
    assert response["Content-Type"] == "application/problem+json"
    assert "url" in response.json()["errors"]
    assert not WebhookEndpoint.objects.exists()
    assert not AdminAuditLog.objects.filter(resource_type="billing_project.webhookendpoint").exists()


def test_the_console_refuses_an_endpoint_on_a_private_address_with_the_reason(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    console = Client()
    console.force_login(staff_member("superuser"))

    response = console.post(
        "/admin/billing_project/webhookendpoint/add/", {"url": "http://10.1.2.3/hooks", "description": "internal"}
    )

    assert response.status_code == 200
    assert "10.1.2.3 is not a public address" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_a_delivery_whose_host_is_now_a_private_address_is_refused_before_a_byte_is_sent(
    receiver, endpoint, settings, django_capture_on_commit_callbacks
):
    # registered while allowed; the name an endpoint gives may later resolve into our own network
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False

    event = emit(django_capture_on_commit_callbacks)

    assert receiver.requests == []
    delivery = WebhookDelivery.objects.get(event=event)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.PENDING, 1, None)
    assert "127.0.0.1, not a public address" in delivery.last_error


def test_staff_change_and_disable_an_endpoint_and_its_pending_deliveries_fail(
    roles_with_webhooks, staff_client, staff_user
):
    endpoint = endpoint_create(actor=staff_user, url="https://app.example.com/hooks")
    with transaction.atomic():
        event = event_emit(type=EventType.LICENSE_CREATED, subject="license:1", data={})

    changed = staff_client.patch(f"{ENDPOINTS}{endpoint.pk}/", {"event_types": ["license"]}, format="json")
    deleted = staff_client.delete(f"{ENDPOINTS}{endpoint.pk}/")

    assert changed.status_code == 200 and changed.json()["event_types"] == ["license"]
    assert deleted.status_code == 204
    endpoint.refresh_from_db()
    assert (endpoint.is_active, endpoint.disabled_reason) == (False, "Disabled by staff.")
    assert WebhookDelivery.objects.get(event=event).status == DeliveryStatus.FAILED
    actions = list(
        AdminAuditLog.objects.filter(resource_type="billing_project.webhookendpoint")
        .order_by("timestamp")
        .values_list("action", flat=True)
    )
    assert actions == ["create", "update", "deactivate"]


def test_the_delivery_log_is_paginated_and_a_resend_sends_the_same_webhook_id_again(
    roles_with_webhooks, staff_client, receiver, endpoint, django_capture_on_commit_callbacks
):
    events = [emit(django_capture_on_commit_callbacks, subject=f"user:{n}") for n in range(3)]

    page = staff_client.get(f"{ENDPOINTS}{endpoint.pk}/deliveries/", {"page_size": 2})
    delivered = staff_client.get(f"{ENDPOINTS}{endpoint.pk}/deliveries/", {"status": "failed"})
    target = WebhookDelivery.objects.get(event=events[0])
    with django_capture_on_commit_callbacks(execute=True):
        resent = staff_client.post(f"{ENDPOINTS}{endpoint.pk}/deliveries/{target.pk}/resend/")

    assert page.status_code == 200
    assert page.json()["count"] == 3 and len(page.json()["results"]) == 2
    assert page.json()["results"][0]["webhook_id"] == str(events[2].pk)  # newest first
    assert delivered.json()["count"] == 0
    assert resent.status_code == 200, resent.json()
    assert receiver.delivered_ids().count(str(events[0].pk)) == 2
    target.refresh_from_db()
    assert (target.status, target.attempts) == (DeliveryStatus.DELIVERED, 1)
    assert AdminAuditLog.objects.filter(resource_type="billing_project.webhookdelivery", action="process").count() == 1


def test_resending_to_a_disabled_endpoint_is_a_409_problem(roles_with_webhooks, staff_client, staff_user):
    endpoint = endpoint_create(actor=staff_user, url="https://app.example.com/hooks")
    with transaction.atomic():
        event = event_emit(type=EventType.LICENSE_CREATED, subject="license:1", data={})
    staff_client.delete(f"{ENDPOINTS}{endpoint.pk}/")
    delivery = WebhookDelivery.objects.get(event=event)

    response = staff_client.post(f"{ENDPOINTS}{endpoint.pk}/deliveries/{delivery.pk}/resend/")

    assert response.status_code == 409
    assert response.json()["code"] == "webhook_endpoint_disabled"
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.FAILED
