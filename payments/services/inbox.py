"""The Stripe webhook inbox: verify, store, dispatch, in that order.

The `WebhookEvent` row is the record of record, with the raw body whose signature was verified. It
is written in the transaction that applies the event's effects, and its unique (provider, event_id)
settles concurrent deliveries: the second insert waits for the first transaction and then finds its
row. A processed event answers every later delivery with its first result. A handler that fails has
its effects rolled back (savepoint) while the row keeps the error, and the request answers 500 so
that Stripe delivers it again.

Handlers come from the registry (`payments.registry.event_handler_register`): payments' own (the
operations it settles), then those the apps above register for their objects.
"""

import json
import logging
from datetime import UTC, datetime

import stripe
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of, to_json
from billing_project.errors import DomainError, NotFound, retryable_conflict_of
from billing_project.metrics import IDEMPOTENT_HITS, WEBHOOK_INVALID_SIGNATURES, WEBHOOK_REPLAY_BLOCKS
from billing_project.transactions import conflict_retrying
from payments.codes import ErrorCode
from payments.models import WebhookEvent, WebhookProvider, WebhookStatus
from payments.registry import event_handlers
from payments.services.events import payment_event_record

logger = logging.getLogger(__name__)

DONE = (WebhookStatus.PROCESSED, WebhookStatus.IGNORED)


class InvalidSignature(DomainError):
    code = ErrorCode.INVALID_SIGNATURE
    title = "Invalid webhook signature"


class WebhookProcessingFailed(DomainError):
    """Answered 500 so that Stripe delivers the event again; the row keeps the error."""

    status = 500
    code = ErrorCode.WEBHOOK_PROCESSING_FAILED
    title = "Webhook processing failed"


def webhook_receive(*, payload: bytes, signature_header: str) -> tuple[WebhookEvent, bool]:
    """Verifies the signature on the raw body (tolerance 300 s), then stores and processes the event.
    Returns the row and whether this delivery was a replay of a finished event."""
    try:
        if not settings.STRIPE_WEBHOOK_SECRET:
            raise stripe.SignatureVerificationError("No webhook secret is configured.", signature_header)
        body = payload.decode("utf-8")
        stripe.WebhookSignature.verify_header(
            body, signature_header, settings.STRIPE_WEBHOOK_SECRET, tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS
        )
        event = json.loads(body)
        event_id, event_type = event["id"], event["type"]
    except (stripe.SignatureVerificationError, ValueError, KeyError, TypeError) as error:
        WEBHOOK_INVALID_SIGNATURES.inc()
        raise InvalidSignature(f"The Stripe-Signature header does not verify this body: {error}") from error
    # A finished event never changes back: a redelivery is answered from a plain read, no transaction.
    finished = (
        WebhookEvent.objects.defer("payload", "raw_body")
        .filter(provider=WebhookProvider.STRIPE, event_id=event_id, status__in=DONE)
        .first()
    )
    if finished is not None:
        _replay_counted()
        return finished, True
    return webhook_event_accept(event_id=event_id, event_type=event_type, event=event, raw_body=body)


def _replay_counted() -> None:
    WEBHOOK_REPLAY_BLOCKS.inc()
    IDEMPOTENT_HITS.labels(operation="webhook").inc()


@conflict_retrying
@transaction.atomic
def webhook_event_accept(
    *, event_id: str, event_type: str, event: dict, raw_body: str = ""
) -> tuple[WebhookEvent, bool]:
    row, created = WebhookEvent.objects.get_or_create(
        provider=WebhookProvider.STRIPE,
        event_id=event_id,
        defaults={
            "event_type": event_type,
            "payload": event,
            "raw_body": raw_body.replace("\x00", "\ufffd"),
            "event_created_at": timestamp_of(event.get("created")),
        },
    )
    if not created:
        row = WebhookEvent.objects.select_for_update().get(pk=row.pk)
        if row.status in DONE:
            _replay_counted()
            return row, True
    _process(row)
    return row, False


@conflict_retrying
@transaction.atomic
def webhook_replay(*, event_id: str, actor=None) -> WebhookEvent:
    """Processes a stored event again (manage.py replay_webhook, console action); audited. The
    handlers are idempotent, so replaying a processed event changes nothing."""
    row = WebhookEvent.objects.select_for_update().filter(event_id=event_id).first()
    if row is None:
        raise NotFound(f"No stored webhook event {event_id}.", code=ErrorCode.WEBHOOK_EVENT_NOT_FOUND)
    previous = {"status": row.status, "result": row.result, "error": row.error}
    _process(row)
    audit_record(
        action=AuditAction.PROCESS,
        resource_type=resource_type_of(row),
        resource_id=row.event_id,
        previous_value=previous,
        new_value={"status": row.status, "result": row.result, "error": row.error, "replay": True},
        actor=actor,
    )
    return row


def _process(row: WebhookEvent) -> None:
    row.attempts += 1
    try:
        with transaction.atomic():
            result = _dispatch(row)
    except Exception as error:  # the row keeps what went wrong; its effects rolled back with the savepoint
        if isinstance(error, DatabaseError) and retryable_conflict_of(error):
            raise  # not the event's fault: the whole transaction runs again (webhook_event_accept)
        logger.exception("webhook %s (%s) failed", row.event_id, row.event_type)
        row.status, row.error, row.result = WebhookStatus.FAILED, f"{type(error).__name__}: {error}"[:5000], None
        row.save(update_fields=["status", "error", "result", "attempts", "updated_at"])
        return
    row.status = WebhookStatus.IGNORED if result is None else WebhookStatus.PROCESSED
    row.result = to_json(result)
    row.error = ""
    row.processed_at = timezone.now()
    row.save(update_fields=["status", "result", "error", "processed_at", "attempts", "updated_at"])


def _dispatch(row: WebhookEvent) -> dict | None:
    for handler in event_handlers(row.event_type):
        result = handler(row)
        if result is not None:
            return result
    return None


def timestamp_of(seconds) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None


def event_object(row: WebhookEvent) -> dict:
    return row.payload["data"]["object"]


def event_record(row: WebhookEvent, *, event_type: str, user=None, amount=None, currency="", **ids) -> None:
    """The PaymentEvent and the audit row of a handled event that is not an operation's settlement
    (those write their own)."""
    payment_event_record(
        event_type=event_type,
        user=user,
        amount=amount,
        currency=currency,
        metadata={"stripe_event_id": row.event_id, "stripe_event_type": row.event_type},
        webhook_event=row,
        **ids,
    )
    audit_record(
        action=AuditAction.PROCESS,
        resource_type=resource_type_of(row),
        resource_id=row.event_id,
        new_value={"event_type": row.event_type, "payment_event": event_type, "amount": amount, **ids},
    )
