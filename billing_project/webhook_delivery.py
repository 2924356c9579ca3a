"""Sending outbound events to the webhook endpoints, following the Standard Webhooks specification.

Each delivery is claimed in a short transaction (`select_for_update(skip_locked)`), which leases it
(next_attempt_at moved WEBHOOK_CLAIM_SECONDS ahead) so no other worker takes it; the HTTP call is made
with no transaction open; the result is recorded only if the lease is still ours. A worker that dies
mid-send leaves the lease to run out, and the beat job sends the delivery again: delivery is at least
once, and receivers deduplicate on `webhook-id` (the event's id, the same on every attempt).

Order per subject: a delivery is not claimed while an earlier event of the same subject to the same
endpoint is still pending (in flight or waiting for a retry), so an endpoint receives one subject's
events in the order they happened. An event whose delivery failed for good no longer holds back the
later ones.
"""

import base64
import http.client
import ipaddress
import json
import logging
import random
import secrets
import socket
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from billing_project.enums import EventType
from billing_project.jobs import items_run
from billing_project.models import DeliveryStatus, OutboundEvent, WebhookDelivery, WebhookEndpoint
from billing_project.outbound import notify

logger = logging.getLogger(__name__)

JITTER = 0.1
# A beat run stops claiming after this many sends; the next run (a minute later) goes on.
SENDS_PER_RUN = 500


def endpoint_secret_generate() -> str:
    """A Standard Webhooks secret: 'whsec_' and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def event_payload(event: OutboundEvent) -> str:
    """The body every attempt of the event sends, identical each time."""
    return json.dumps(
        {
            "type": event.type,
            "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
            "subject": event.subject,
            "data": event.data,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def delivery_headers(*, endpoint: WebhookEndpoint, event: OutboundEvent, body: str, sent_at: datetime) -> dict:
    """The Standard Webhooks headers of one attempt: signed anew, as receivers refuse an old timestamp."""
    message_id = str(event.pk)
    return {
        "Content-Type": "application/json",
        "User-Agent": "billing-webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": Webhook(endpoint.secret).sign(message_id, sent_at, body),
    }


class NonPublicAddress(OSError):
    """The endpoint's host is, at this attempt, an address of our own network."""


def address_is_public(ip: str) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local, shared,
    reserved or multicast (an IPv4 address mapped into IPv6 is judged as itself)."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def endpoint_url_problem(url: str) -> str | None:
    """Why staff cannot register this URL, or None. A name is judged where it resolves, at each
    attempt (it may resolve elsewhere by then); an address or `localhost` is judged here."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        return "An endpoint URL starts with https:// (or http://)."
    if settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        return None
    host = (parts.hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine: endpoints reach public addresses only."
    try:
        public = address_is_public(host)
    except ValueError:
        return None
    return None if public else f"{host} is not a public address: endpoints reach public addresses only."


def _public_connection(address, *args, **kwargs):
    """socket.create_connection that drops a peer which is not a public address, once connected and
    before a byte of the request is sent: whatever the name resolved to this time is what counts."""
    sock = socket.create_connection(address, *args, **kwargs)
    peer = sock.getpeername()[0]
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES and not address_is_public(peer):
        sock.close()
        raise NonPublicAddress(f"{address[0]} is {peer}, not a public address")
    return sock


class _PublicHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _public_connection


class _PublicHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _public_connection


class _PublicHTTPHandler(urllib.request.HTTPHandler):
    def do_open(self, http_class, request, **kwargs):
        return super().do_open(_PublicHTTPConnection, request, **kwargs)


class _PublicHTTPSHandler(urllib.request.HTTPSHandler):
    def do_open(self, http_class, request, **kwargs):
        return super().do_open(_PublicHTTPSConnection, request, **kwargs)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer other than 2xx: the attempt fails rather than posting elsewhere."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects, _PublicHTTPHandler, _PublicHTTPSHandler)


def _post(*, url: str, body: str, headers: dict) -> tuple[int | None, str]:
    """(status code or None, error text). Never raises for what the network or the receiver does."""
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, f"HTTP {error.code}"
    except (OSError, ValueError) as error:  # refused, reset, timed out, unresolvable, malformed URL
        return None, f"{type(error).__name__}: {error}"[:500]


def _earlier_of_subject_pending():
    """A pending delivery, to the same endpoint, of an earlier event of the same subject."""
    earlier = Q(event__created_at__lt=OuterRef("event__created_at")) | Q(
        event__created_at=OuterRef("event__created_at"), event_id__lt=OuterRef("event_id")
    )
    return WebhookDelivery.objects.filter(
        earlier,
        endpoint_id=OuterRef("endpoint_id"),
        status=DeliveryStatus.PENDING,
        event__subject=OuterRef("event__subject"),
    )


def _claim_next(*, event_id=None) -> tuple[WebhookDelivery, datetime] | None:
    """Claims one due delivery (of `event_id` if given), or None. The lease is the new
    next_attempt_at, which the result recording checks."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.WEBHOOK_CLAIM_SECONDS)
    due = WebhookDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lte=now, endpoint__is_active=True
    ).exclude(Exists(_earlier_of_subject_pending()))
    if event_id is not None:
        due = due.filter(event_id=event_id)
    # Short transaction: the row lock only decides who claims; the lease keeps others away afterwards.
    with transaction.atomic():
        delivery = (
            due.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint", "event")
            .order_by("next_attempt_at")
            .first()
        )
        if delivery is None:
            return None
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=lease, updated_at=now)
    return delivery, lease


def _retry_delay(attempts: int) -> timedelta | None:
    """The wait after the `attempts`-th failed attempt, jittered; None once the schedule is spent."""
    delays = settings.WEBHOOK_RETRY_DELAYS
    if attempts > len(delays):
        return None
    return delays[attempts - 1] * random.uniform(1 - JITTER, 1 + JITTER)


@transaction.atomic
def _result_record(
    *, delivery: WebhookDelivery, lease: datetime, sent_at: datetime, status_code: int | None, error: str
) -> str:
    # Only while the lease is ours: a resend or a disabling meanwhile decided the row's fate.
    row = WebhookDelivery.objects.select_for_update().filter(
        pk=delivery.pk, status=DeliveryStatus.PENDING, next_attempt_at=lease
    )
    row = row.first()
    if row is None:
        return "superseded"
    row.attempts += 1
    row.last_attempt_at = sent_at
    row.last_status_code = status_code
    if status_code is not None and 200 <= status_code < 300:
        row.status = DeliveryStatus.DELIVERED
        row.delivered_at = sent_at
        row.next_attempt_at = None
        row.last_error = ""
        row.save()
        WebhookEndpoint.objects.filter(pk=row.endpoint_id, failing_since__isnull=False).update(failing_since=None)
        return "delivered"
    row.last_error = error or f"HTTP {status_code}"
    delay = _retry_delay(row.attempts)
    if delay is None:
        row.status = DeliveryStatus.FAILED
        row.next_attempt_at = None
    else:
        row.next_attempt_at = sent_at + delay
    row.save()
    WebhookEndpoint.objects.filter(pk=row.endpoint_id, failing_since__isnull=True).update(failing_since=sent_at)
    _endpoint_disable_if_failing_too_long(endpoint_id=row.endpoint_id, now=sent_at)
    return "failed" if delay is None else "retrying"


def _attempt(claim: tuple[WebhookDelivery, datetime]) -> str:
    delivery, lease = claim
    body = event_payload(delivery.event)
    sent_at = timezone.now()
    headers = delivery_headers(endpoint=delivery.endpoint, event=delivery.event, body=body, sent_at=sent_at)
    status_code, error = _post(url=delivery.endpoint.url, body=body, headers=headers)
    if error:
        logger.info("webhook %s to %s: %s", delivery.event_id, delivery.endpoint.url, error)
    return _result_record(delivery=delivery, lease=lease, sent_at=sent_at, status_code=status_code, error=error)


def _claims(*, event_id=None, limit: int):
    for _ in range(limit):
        claim = _claim_next(event_id=event_id)
        if claim is None:
            return
        yield claim


def webhook_event_deliver(*, event_id) -> dict:
    """Sends the event's pending deliveries that are due now (right after the change committed).
    Returns the count of each outcome."""
    return dict(items_run(job="webhook-event-deliver", items=_claims(event_id=event_id, limit=1000), work=_attempt))


def webhook_deliveries_send_due() -> dict:
    """Sends every pending delivery whose time has come, in order per subject (the beat job: what a
    lost task, a down worker or a retry left behind). Returns the count of each outcome."""
    return dict(items_run(job="webhook-deliveries", items=_claims(limit=SENDS_PER_RUN), work=_attempt))


def _endpoint_disable_if_failing_too_long(*, endpoint_id, now: datetime) -> None:
    since = now - settings.WEBHOOK_ENDPOINT_DISABLE_AFTER
    endpoint = (
        WebhookEndpoint.objects.select_for_update()
        .filter(pk=endpoint_id, is_active=True, failing_since__lte=since)
        .first()
    )
    if endpoint is None:
        return
    days = settings.WEBHOOK_ENDPOINT_DISABLE_AFTER.days
    endpoint_deactivate(endpoint=endpoint, reason=f"Every delivery failed for {days} days.", now=now)
    notify(
        user=None,
        kind=EventType.WEBHOOK_ENDPOINT_DISABLED,
        occurrence=f"{endpoint.pk}:{endpoint.disabled_at.isoformat()}",
        subject=f"webhook_endpoint:{endpoint.pk}",
        context={
            "endpoint_id": str(endpoint.pk),
            "url": endpoint.url,
            "failing_since": endpoint.failing_since.isoformat(),
            "disabled_at": endpoint.disabled_at.isoformat(),
            "reason": endpoint.disabled_reason,
        },
    )


def endpoint_deactivate(*, endpoint: WebhookEndpoint, reason: str, now: datetime | None = None) -> WebhookEndpoint:
    """Disables a locked endpoint: it gets no new deliveries, and its pending ones fail (staff may
    resend them once it works again). The caller holds the row lock and audits if staff did it."""
    now = now or timezone.now()
    endpoint.is_active = False
    endpoint.disabled_at = now
    endpoint.disabled_reason = reason[:200]
    endpoint.save(update_fields=["is_active", "disabled_at", "disabled_reason", "updated_at"])
    endpoint.deliveries.filter(status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED, next_attempt_at=None, last_error="The endpoint was disabled.", updated_at=now
    )
    return endpoint
