"""The Stripe webhook inbox: verify, store, dispatch, in that order.

The `WebhookEvent` row is the record of record, with the raw body whose signature was verified. It
is written once, with its outcome, at the end of the transaction that applies the event's effects.
Concurrent deliveries of one event are settled by a transaction-scoped lock on the event id, taken
before its row is looked for (PostgreSQL; SQLite runs one writer at a time): the second delivery
waits for the first transaction and then finds its row. The unique (provider, event_id) stays the
last guard. A processed event answers every later delivery with its result, kept in the shared cache for a
day (FINISHED_ANSWER_SECONDS) so that a redelivery costs no database round trip. A handler that fails has
its effects rolled back with its transaction; a second one stores the row with the error, and the
request answers 500 so that Stripe delivers it again.

What an event changes is recorded by the inbox: the row itself (with the verified body), the
`PaymentEvent` ledger and the audit chain rows the handlers write (which refer to the stored body by
the event id and its SHA-256 digest rather than hold a copy). The object history of
django-auditlog is not written meanwhile (it would repeat each change, at a read and a write per
row): it shows what staff and the services change outside the inbox.

Handlers come from the registry (`payments.registry.event_handler_register`): payments' own (the
operations it settles), then those the apps above register for their objects.

Order: events arrive in any order. Each event's object (subscription, invoice, checkout session,
customer...) has one `ProviderObjectVersion` row naming the newest event applied to it; an event
created before that one is stale and changes nothing, and the row, locked while an event is applied,
makes the events of one object (invoice.paid and invoice.payment_succeeded at once) apply one after
the other.

What an event alone cannot tell (a subscription or customer not known here) is read from Stripe by
the registered fetchers with no transaction open, never inside one: on PostgreSQL, whether it is
known is read in the transaction's first round trip, which is rolled back when it is not; the
fetchers then read Stripe and the event is accepted again. An event about nothing known
here is kept as `unmatched` with the reason and answered 200; `webhook_replay` processes it again
once staff have linked it. A handler's own failure still answers 500, so Stripe delivers it again.
"""

import functools
import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
import stripe
from auditlog.context import disable_auditlog
from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, transaction
from django.utils import timezone

from audit.context import request_body_recorded_as
from audit.models import AuditAction
from audit.services import audit_record, resource_type_of, to_json
from billing_project import sql
from billing_project.appends import appends_deferred
from billing_project.cache_writes import cache_set_on_commit
from billing_project.errors import DomainError, NotFound, retryable_conflict_of
from billing_project.metrics import IDEMPOTENT_HITS, WEBHOOK_INVALID_SIGNATURES, WEBHOOK_REPLAY_BLOCKS
from billing_project.rows import row_insert, row_insert_unless_present
from billing_project.transactions import conflict_retrying
from payments import stripe_api
from payments.codes import ErrorCode
from payments.models import ProviderObjectVersion, WebhookEvent, WebhookProvider, WebhookStatus
from payments.registry import Fetcher, Unmatched, event_fetchers, event_handlers, event_reads
from payments.services.events import payment_event_record

logger = logging.getLogger(__name__)

DONE = (WebhookStatus.PROCESSED.value, WebhookStatus.IGNORED.value)


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
        event = orjson.loads(payload)
        event_id, event_type = event["id"], event["type"]
    except (stripe.SignatureVerificationError, ValueError, KeyError, TypeError) as error:
        WEBHOOK_INVALID_SIGNATURES.inc()
        raise InvalidSignature(f"The Stripe-Signature header does not verify this body: {error}") from error
    # The inbox keeps the verified body: its audit rows refer to it, so erasing it leaves no copy behind.
    request_body_recorded_as(
        {
            "stripe_event_id": event_id,
            "stored_in": "payments.webhookevent",
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
    )
    # A finished event never changes back: a redelivery is answered from the shared cache.
    finished = _finished_remembered(event_id)
    if finished is not None:
        _replay_counted()
        return finished, True
    arguments = dict(event_id=event_id, event_type=event_type, event=event, raw_body=body)
    known = [(fetcher, _known_read(fetcher, _object_of(event))) for fetcher in event_fetchers(event_type)]
    if sql.default_connection().vendor == "postgresql" and all(read is not None for _, read in known):
        # What the fetchers would read is looked for in the transaction's first round trip, with the
        # stored row: a new event whose objects are known here costs no round trip before it. When
        # one is not known, that transaction is rolled back and Stripe is read with none open.
        try:
            return webhook_event_accept(**arguments, known=known)
        except ObjectsNotKnown as not_known:
            return webhook_event_accept(**arguments, fetched=provider_objects_fetch(event, fetchers=not_known.fetchers))
    # A fetcher that cannot tell without calling Stripe: a finished event is looked for first, so that
    # its redelivery never calls Stripe.
    finished, unknown = _finished_or_to_fetch(event_id, known)
    if finished is not None:
        _replay_counted()
        return finished, True
    return webhook_event_accept(**arguments, fetched=provider_objects_fetch(event, fetchers=unknown))


# What a redelivery of a finished event is answered with (payments.api.views.StripeWebhookView).
FINISHED_FIELDS = ("id", "event_id", "event_type", "status", "result", "error")


# How long the cache keeps a finished event's answer. Stripe delivers an event again when it did not
# get our answer, first within minutes, then further apart over three days: the first day holds most
# redeliveries at a third of the memory. Later ones are answered from the row.
FINISHED_ANSWER_SECONDS = 24 * 3600


def _finished_key(event_id: str) -> str:
    return f"payments:webhook-finished:{WebhookProvider.STRIPE.value}:{event_id}"


def _finished_remembered(event_id: str) -> WebhookEvent | None:
    """The finished event's row (FINISHED_FIELDS) as its last processing left it, from the shared
    cache: a redelivery then costs no database round trip (bench/webhooks_cpu.py --replay: 0.7 ms of
    CPU, against 0.78 ms and the database's 0.23 ms for the row's read). None when the cache does not
    hold it (never finished, expired, Redis down) or holds other fields (written by another release)."""
    values = cache.get(_finished_key(event_id))
    if not isinstance(values, dict) or values.keys() != set(FINISHED_FIELDS):
        return None
    return WebhookEvent.from_db(DEFAULT_DB_ALIAS, FINISHED_FIELDS, [values[name] for name in FINISHED_FIELDS])


def _finished_remember_on_commit(row: WebhookEvent) -> None:
    """Once the row's outcome is committed: its answer in the cache when the event finished
    (processed or ignored), out of it otherwise (a staff replay that failed a finished event: the next
    delivery must find the row's new state). Two outcomes of one event committing at once (a staff
    replay racing a delivery, one after the other under the row's lock) could leave the earlier one
    cached until FINISHED_ANSWER_SECONDS: the row stays the record, and a failed row is listed for staff."""
    key = _finished_key(row.event_id)
    if row.status in DONE:
        # As the row reads back: the status's plain value, not the enum member.
        answer = {name: str(row.status) if name == "status" else getattr(row, name) for name in FINISHED_FIELDS}
        cache_set_on_commit({key: answer}, timeout=FINISHED_ANSWER_SECONDS)
    else:
        transaction.on_commit(lambda: cache.delete(key))


@functools.cache
def _finished_statement() -> str:
    """Written out once: the ORM compiling this read was a sixth of a redelivery's time (bench/spy.py).
    At most one row (unique per provider and event id)."""
    columns = ", ".join(sql.column(WebhookEvent, name) for name in FINISHED_FIELDS)
    return (
        f"SELECT {columns} FROM {sql.table(WebhookEvent)} WHERE {sql.column(WebhookEvent, 'provider')} = %s "
        f"AND {sql.column(WebhookEvent, 'event_id')} = %s AND {sql.column(WebhookEvent, 'status')} IN (%s, %s)"
    )


def _finished_or_to_fetch(
    event_id: str, known: list[tuple[Fetcher, sql.Statement | None]]
) -> tuple[WebhookEvent | None, list[Fetcher]]:
    """The event's row if it was processed or ignored (DONE), with FINISHED_FIELDS loaded; and the
    fetchers still to call: those without a `known` read or whose read found nothing. One round trip."""
    finished_read = (_finished_statement(), [WebhookProvider.STRIPE.value, event_id, *DONE])
    rows, *known_rows = sql.read_all([finished_read, *(read for _, read in known if read is not None)])
    found = iter(known_rows)
    unknown = [fetcher for fetcher, read in known if read is None or not next(found)]
    return next(iter(sql.instances(WebhookEvent, FINISHED_FIELDS, rows)), None), unknown


# What reading a signed payload of an unexpected shape raises (a field that is not the object, list
# or number the pinned API version sends). Its event is then stored and its handlers meet the payload
# themselves: they fail (the row keeps the error, the answer is 500) or find nothing.
UNREADABLE_PAYLOAD = (KeyError, TypeError, AttributeError, ValueError)


def _known_read(fetcher: Fetcher, data_object: dict) -> sql.Statement | None:
    """The fetcher's read of what it would fetch, None without one or for a payload it cannot read."""
    if fetcher.known is None:
        return None
    try:
        return fetcher.known(data_object)
    except UNREADABLE_PAYLOAD:
        return None


def provider_objects_fetch(event: dict, *, fetchers: list[Fetcher] | None = None) -> dict:
    """What the event's fetchers (all registered for its type unless given) read from Stripe, by
    object id, with no transaction open. A failure to read is kept under `fetch_error` (the event
    may then stay unmatched); a payload a fetcher cannot read is left to the handlers."""
    fetched: dict = {}
    data_object = _object_of(event)
    for fetcher in event_fetchers(event.get("type", "")) if fetchers is None else fetchers:
        try:
            fetched.update(fetcher.fetch(data_object))
        except (stripe_api.ProviderUnavailable, stripe_api.ProviderError) as error:
            logger.warning("webhook %s: Stripe could not be read: %s", event.get("id"), error)
            fetched["fetch_error"] = str(error)[:500]
        except UNREADABLE_PAYLOAD as error:
            logger.warning("webhook %s: a fetcher cannot read the payload: %r", event.get("id"), error)
    return to_json(fetched)


def _replay_counted() -> None:
    WEBHOOK_REPLAY_BLOCKS.inc()
    IDEMPOTENT_HITS.labels(operation="webhook").inc()


def webhook_event_accept(
    *,
    event_id: str,
    event_type: str,
    event: dict,
    raw_body: str = "",
    fetched: dict | None = None,
    known: Sequence[tuple[Fetcher, sql.Statement]] = (),
) -> tuple[WebhookEvent, bool]:
    """Stores and applies the event. `known`: fetchers not called, with their `known` reads; if one
    finds nothing, ObjectsNotKnown is raised with nothing written, unless the event is finished."""
    arguments = dict(event_id=event_id, event_type=event_type, event=event, raw_body=raw_body, fetched=fetched)
    try:
        return _accept(**arguments, known=known)
    except HandlerFailed as failure:
        return _accept(**arguments, failure=failure)


class ObjectsNotKnown(Exception):
    """What the fetchers would read from Stripe is not known here: their event's transaction is rolled
    back, so that they read it with none open."""

    def __init__(self, fetchers: list[Fetcher]):
        super().__init__(fetchers)
        self.fetchers = fetchers


@conflict_retrying
@transaction.atomic
def _accept(
    *,
    event_id: str,
    event_type: str,
    event: dict,
    raw_body: str,
    fetched: dict | None,
    known: Sequence[tuple[Fetcher, sql.Statement]] = (),
    failure=None,
) -> tuple[WebhookEvent, bool]:
    """Stores and applies the event, or (`failure`: the handlers failed and their transaction was
    rolled back) stores what went wrong."""
    row = sql.new_row(
        WebhookEvent,
        provider=WebhookProvider.STRIPE,
        event_id=event_id,
        event_type=event_type,
        payload=event,
        raw_body=raw_body.replace("\x00", "\ufffd"),
        event_created_at=timestamp_of(event.get("created")),
        object_id=_object_of(event).get("id") or "",
        fetched=fetched or {},
    )
    version, reads = (_version_of(row), _reads_ahead(row)) if failure is None else (None, [])
    stored, version_new, read_rows = _stored_locked(row, version, [*(read for _, read in known), *reads])
    if stored is not None and stored.status in DONE:
        _replay_counted()
        return stored, True
    known_rows, read_rows = read_rows[: len(known)], read_rows[len(known) :]
    not_known = [fetcher for (fetcher, _), rows in zip(known, known_rows, strict=True) if not rows]
    if not_known:
        raise ObjectsNotKnown(not_known)
    if stored is not None:
        if fetched:
            stored.fetched = fetched
        row = stored
    with sql.reads_primed(reads[: len(read_rows)], read_rows):
        _process(row, failure, version=version, version_new=version_new, commit=True)
    return row, False


def _reads_ahead(row: WebhookEvent) -> list[sql.Statement]:
    """The reads the event's handlers make first (payments.registry's event reads); none for a
    payload they cannot read: the handlers then meet it themselves and fail or find nothing, with
    the row stored as for any event."""
    try:
        return [statement for reads in event_reads(row.event_type) for statement in reads(row)]
    except UNREADABLE_PAYLOAD:
        return []


# The lock space of the event locks (the first key of PostgreSQL's two-key advisory locks), apart
# from any other advisory lock taken on the database. The second key is a 32-bit hash of the event
# id: two events whose ids hash alike only wait for each other.
EVENT_LOCK_SPACE = 0x57484B  # "WHK"


@functools.cache
def _stored_statements() -> tuple[str, str]:
    """The event lock and the read of the stored row (locked)."""
    match = f"{sql.column(WebhookEvent, 'provider')} = %s AND {sql.column(WebhookEvent, 'event_id')} = %s"
    return "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", sql.first_statement(WebhookEvent, match, lock="FOR UPDATE")


def _stored_locked(
    row: WebhookEvent, version: ProviderObjectVersion | None, reads: list[sql.Statement]
) -> tuple[WebhookEvent | None, bool | None, list[list[tuple]]]:
    """The event's stored row, locked (None: not stored), with the event lock held until the
    transaction ends; whether `version` (the event's object's version row) was inserted, unless
    the stored row is finished: None when that was not tried, and always on SQLite, where the
    inbox inserts it when it applies the event; and the rows of `reads`, made last (none on SQLite).
    One round trip on PostgreSQL: each statement after the lock reads what was committed before
    the lock was granted."""
    key = [row.provider, row.event_id]
    lock_sql, read_sql = _stored_statements()
    if sql.default_connection().vendor != "postgresql":
        (stored_rows,) = sql.read_all([(read_sql, key)])
        return sql.loaded(WebhookEvent, stored_rows), None, []
    statements = [(lock_sql, [EVENT_LOCK_SPACE, f"{row.provider}:{row.event_id}"]), (read_sql, key)]
    if version is not None:
        # Unless the stored row is finished.
        insert_sql, insert_params = sql.insert([version])
        target = f"{sql.column(ProviderObjectVersion, 'provider')}, {sql.column(ProviderObjectVersion, 'object_id')}"
        statements.append(
            (
                f"WITH finished AS ({_finished_statement()}) {insert_sql} WHERE NOT EXISTS (SELECT 1 FROM finished) "
                f"ON CONFLICT ({target}) DO NOTHING RETURNING 1",
                [*key, *DONE, *insert_params],
            )
        )
    _, stored_rows, *results = sql.read_all([*statements, *reads])
    inserted, read_rows = results[: len(results) - len(reads)], results[len(results) - len(reads) :]
    stored = sql.loaded(WebhookEvent, stored_rows)
    if version is None or (stored is not None and stored.status in DONE):
        return stored, None, read_rows
    if inserted[0]:
        version._state.adding, version._state.db = False, DEFAULT_DB_ALIAS
    return stored, bool(inserted[0]), read_rows


def webhook_replay(*, event_id: str, actor=None) -> WebhookEvent:
    """Processes a stored event again (manage.py replay_webhook, the console and staff API actions,
    an unmatched event once staff have linked its object); audited. What the event needs from
    Stripe is read first, outside the transaction. The handlers are idempotent, so replaying a
    processed event changes nothing."""
    stored = WebhookEvent.objects.filter(event_id=event_id).only("payload").first()
    if stored is None:
        raise NotFound(f"No stored webhook event {event_id}.", code=ErrorCode.WEBHOOK_EVENT_NOT_FOUND)
    fetched = provider_objects_fetch(stored.payload)
    try:
        return _replay(event_id=event_id, fetched=fetched, actor=actor)
    except HandlerFailed as failure:
        return _replay(event_id=event_id, fetched=fetched, actor=actor, failure=failure)


@conflict_retrying
@transaction.atomic
def _replay(*, event_id: str, fetched: dict, actor, failure=None) -> WebhookEvent:
    row = WebhookEvent.objects.select_for_update().get(event_id=event_id)
    previous = {"status": row.status, "result": row.result, "error": row.error}
    if fetched:
        row.fetched = fetched
    _process(row, failure)
    audit_record(
        action=AuditAction.PROCESS,
        resource_type=resource_type_of(row),
        resource_id=row.event_id,
        previous_value=previous,
        new_value={"status": row.status, "result": row.result, "error": row.error, "replay": True},
        actor=actor,
    )
    return row


class HandlerFailed(Exception):
    """The event's handlers failed (or found nothing they know): raised out of the transaction so
    that everything they wrote is rolled back, then stored on the row by a second transaction."""

    def __init__(self, status: WebhookStatus, *, error: str = "", unmatched_reason: str = "", result=None):
        super().__init__(error or unmatched_reason)
        self.status, self.error, self.unmatched_reason, self.result = status, error, unmatched_reason, result


OUTCOME_FIELDS = ["status", "result", "error", "unmatched_reason", "processed_at", "fetched", "attempts", "updated_at"]


def _process(
    row: WebhookEvent,
    failure: HandlerFailed | None,
    *,
    version: ProviderObjectVersion | None = None,
    version_new: bool | None = None,
    commit: bool = False,
) -> None:
    """Applies the event and writes its outcome on the row (inserted with it when the row is new),
    in the caller's transaction (the rows the handlers append and the row go to the database in one
    round trip), or writes the `failure` of an earlier attempt. `version` and `version_new`: the
    object's version row and whether it was inserted already (`_stored_locked`). `commit`: the
    caller's transaction ends with this call, and the applied event's round trip carries its
    COMMIT where it may (sql.commit_carried)."""
    row.attempts += 1
    row.updated_at = timezone.now()
    if failure is not None:
        row.status, row.error, row.unmatched_reason, row.result = (
            failure.status,
            failure.error,
            failure.unmatched_reason,
            failure.result,
        )
        if row._state.adding:
            row_insert(row)
        else:
            row.save(update_fields=OUTCOME_FIELDS)
        _finished_remember_on_commit(row)
        return
    try:
        with disable_auditlog(), appends_deferred() as appends:
            result = _apply_in_order(row, version=version, version_new=version_new)
            row.status = WebhookStatus.IGNORED if result is None else WebhookStatus.PROCESSED
            row.result = to_json(result)
            row.error = row.unmatched_reason = ""
            row.processed_at = row.updated_at
            appends.write(
                last=sql.insert([row]) if row._state.adding else sql.update(row, OUTCOME_FIELDS), commit=commit
            )
        row._state.adding, row._state.db = False, DEFAULT_DB_ALIAS
        _finished_remember_on_commit(row)
    except Unmatched as unmatched:  # nothing it names is known here: acknowledged, kept for staff
        reason = str(unmatched)
        if row.fetched.get("fetch_error"):
            reason = f"{reason} (Stripe could not be read: {row.fetched['fetch_error']})"
        logger.warning("webhook %s (%s) unmatched: %s", row.event_id, row.event_type, reason)
        raise HandlerFailed(
            WebhookStatus.UNMATCHED,
            unmatched_reason=reason[:5000],
            result={"action": "unmatched", "reason": reason[:5000]},
        ) from unmatched
    except Exception as error:
        if isinstance(error, DatabaseError) and retryable_conflict_of(error):
            raise  # not the event's fault: the whole transaction runs again (conflict_retrying)
        logger.exception("webhook %s (%s) failed", row.event_id, row.event_type)
        raise HandlerFailed(WebhookStatus.FAILED, error=f"{type(error).__name__}: {error}"[:5000]) from error


def _object_of(event: dict) -> dict:
    return (event.get("data") or {}).get("object") or {}


def _version_of(row: WebhookEvent) -> ProviderObjectVersion | None:
    """The version row the event's object gets if the event is its first (None: the event names no
    object). The first event is stamped as applied in the INSERT itself (a failing handler rolls the
    row back with its transaction); only an event that applies nothing takes the stamp off again."""
    data_object = event_object(row)
    if not data_object.get("id"):
        return None
    return sql.new_row(
        ProviderObjectVersion,
        provider=row.provider,
        object_id=data_object["id"],
        object_type=data_object.get("object", ""),
        event_created_at=row.event_created_at,
        event_id=row.event_id if row.event_created_at is not None else "",
    )


def _apply_in_order(
    row: WebhookEvent, *, version: ProviderObjectVersion | None = None, version_new: bool | None = None
) -> dict | None:
    """Applies the event unless a newer event of the same object already was (then it is skipped),
    holding the object's version row locked meanwhile. `version_new` None: the version row is
    inserted here, unless present."""
    if version_new is None:
        version = _version_of(row)
        if version is None:
            return _dispatch(row)
        version_new = row_insert_unless_present(version, unique_fields=("provider", "object_id"))
    if version_new:
        result = _dispatch(row)
        if result is None and version.event_created_at is not None:
            version.event_created_at, version.event_id = None, ""
            version.save(update_fields=["event_created_at", "event_id", "updated_at"])
        return result
    version = ProviderObjectVersion.objects.select_for_update().get(provider=row.provider, object_id=version.object_id)
    newest = version.event_created_at
    if newest is not None and row.event_created_at is not None and row.event_created_at < newest:
        skipped = {"action": "stale_event_skipped", "object_id": version.object_id, "newer_event_id": version.event_id}
        event_audit(row, **skipped)
        return skipped
    result = _dispatch(row)
    if result is not None and row.event_created_at is not None and (newest is None or row.event_created_at > newest):
        version.event_created_at, version.event_id = row.event_created_at, row.event_id
        version.save(update_fields=["event_created_at", "event_id", "updated_at"])
    return result


def _dispatch(row: WebhookEvent) -> dict | None:
    for handler in event_handlers(row.event_type):
        result = handler(row)
        if result is not None:
            return result
    return None


def fetched_object(row: WebhookEvent, object_id) -> dict | None:
    """A provider object a fetcher read from Stripe for this event, if any."""
    return row.fetched.get(object_id) if isinstance(object_id, str) and object_id else None


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
    event_audit(row, payment_event=event_type, amount=amount, **ids)


def event_audit(row: WebhookEvent, **values) -> None:
    """The audit row of a handled event (with its payment event's fields, when it wrote one)."""
    audit_record(
        action=AuditAction.PROCESS,
        resource_type=resource_type_of(row),
        resource_id=row.event_id,
        new_value={"event_type": row.event_type, **values},
    )
