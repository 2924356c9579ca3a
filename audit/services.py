"""Writing the admin audit trail, and sealing it into a hash chain.

Every admin write calls `audit_record` inside its own transaction, so the change and its record
commit or roll back together. The row is written unsealed and touches no shared row, so audited
writes never wait for one another. `audit_chain_seal` (a beat job every few seconds, the staff API,
the console and `verify_audit_chain`) then appends the committed unsealed rows to the chain.

Why the chain cannot fork or skip a row:
- Sealers run one at a time: each seals under the chain head's row lock, which only sealers take
  (`select_for_update`), and reads the unsealed rows after taking it, so it sees everything the sealer
  before it committed (PostgreSQL's read committed takes a snapshot per statement). The unique
  `sequence` would refuse a second row at one position even if that failed.
- A row is sealed once: the update that seals it matches only a row still unsealed, the trigger
  refuses any change to a sealed row, and a sealer that fails part-way rolls back whole.
- A row committed late (its transaction began before rows that were sealed already) is simply still
  unsealed at the next run, which appends it after them: the chain's order is the order of sealing,
  which is (created_at, id) within a run. Nothing is ever inserted before a sealed row.
- A row written while a request is answered waits (at most AUDIT_STATUS_WAIT_SECONDS) for the status
  of the response the client got, filled in by `audit.middleware.AuditContextMiddleware`.
"""

import json
import logging
from dataclasses import dataclass
from datetime import timedelta

import orjson
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, IntegrityError, connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from audit.context import current_request_audit
from audit.models import ADMIN_AUDIT_CHAIN, AdminAuditLog, AuditAction, AuditChainHead, AuditLogQuerySet
from audit.redaction import REDACTED, mask_license_key, redact
from billing_project import sql
from billing_project.appends import append
from billing_project.net import client_ip

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


_django_default = DjangoJSONEncoder().default


def to_json(value):
    """A JSON-native copy (Decimals, dates and UUIDs as strings, as DjangoJSONEncoder writes them), as
    the database will return it. Through orjson: the standard library's round trip was a twentieth of a
    renewal webhook's CPU (bench/webhooks_cpu.py). What orjson refuses (an int beyond 64 bits, a key
    that is not a string) takes the standard library's way. A float NaN or infinity becomes None, where
    the standard library would keep it: no value written here holds one (request bodies refuse them)."""
    if value is None:
        return None
    try:
        return orjson.loads(orjson.dumps(value, default=_django_default, option=orjson.OPT_PASSTHROUGH_DATETIME))
    except orjson.JSONEncodeError:
        return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


# Credentials a row may hold: a password hash, an authenticator's secret, an idempotency key, a
# webhook endpoint's signing secret.
SECRET_FIELDS = frozenset({"password", "key", "secret"})


def _recordable(field, instance):
    if field.attname in SECRET_FIELDS:
        return REDACTED
    value = field.value_from_object(instance)
    return mask_license_key(value) if isinstance(value, str) else value


def snapshot(instance: models.Model) -> dict:
    """The concrete field values of a row, JSON-ready, for previous/new values. Audit rows are
    permanent and read by every admin: credentials are redacted and license keys masked."""
    return to_json({field.attname: _recordable(field, instance) for field in instance._meta.concrete_fields})


def resource_type_of(instance_or_model) -> str:
    return instance_or_model._meta.label_lower


def _request_body(request) -> object:
    content_type = request.META.get("CONTENT_TYPE", "")
    try:
        if "json" in content_type:
            raw = request.body[:MAX_BODY_BYTES]
            return redact(json.loads(raw)) if raw else None
        if request.method == "POST" and request.POST:
            return redact({key: request.POST.getlist(key)[-1] for key in request.POST})
    except (ValueError, UnicodeDecodeError):
        return {"unparsed": True}
    except Exception:
        return None
    return None


def _storable(value):
    """PostgreSQL text and jsonb cannot hold NUL characters, which a client may send in a body."""
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    return value


def _recorded_body(request, state) -> object:
    """The redacted body of the request, read once per request served (a webhook writes several rows)."""
    if state is None or state.request is not request:
        return _storable(to_json(_request_body(request)))
    if state.recorded_body is None:
        state.recorded_body = (_storable(to_json(_request_body(request))),)
    return state.recorded_body[0]


def _actor_of(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None, ""
    if getattr(user, "pk", None) is None:
        return None, str(user)  # a service principal
    return user, user.email or user.get_username()


def _ip_field_value(ip: str | None) -> str | None:
    return AdminAuditLog._meta.get_field("ip_address").get_prep_value(ip) if ip else None


# No savepoint of its own: a row that cannot be written fails the caller's transaction with it.
@transaction.atomic(savepoint=False)
def audit_record(
    *,
    action: AuditAction | str,
    resource_type: str,
    resource_id: str = "",
    previous_value=None,
    new_value=None,
    actor=None,
    status_code: int | None = None,
    error_message: str = "",
    request=None,
) -> AdminAuditLog:
    """Writes one unsealed audit row, inside the caller's transaction.

    The request (endpoint, method, IP, user agent, redacted body, actor) comes from the argument or
    from the request being served; tasks and commands pass `actor` and no request. `status_code`
    defaults to the status of the response the request being served gets (filled in once it is
    known, or the one its view expects to give: `audit.context.audit_status_expected`), and to 200
    outside a request.
    """
    state = current_request_audit.get()
    if request is None and state is not None:
        request = state.request
    actor_email = ""
    if actor is not None:
        actor_email = actor.email or actor.get_username()
    elif request is not None:
        actor, actor_email = _actor_of(request)

    expecting = status_code is None and state is not None and state.status_expected is not None
    if expecting:
        status_code = state.status_expected
    answered_later = status_code is None and state is not None
    if status_code is None and state is None:
        status_code = 200  # a task or a command: no client
    row = sql.new_row(
        AdminAuditLog,
        actor=actor,
        actor_email=actor_email,
        action=action,
        resource_type=resource_type,
        resource_id=str(resource_id or ""),
        endpoint=request.path[:255] if request is not None else "",
        method=request.method if request is not None else "",
        ip_address=_ip_field_value(client_ip(request)) if request is not None else None,
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:1000] if request is not None else "",
        request_body=_recorded_body(request, state) if request is not None else None,
        previous_value=to_json(previous_value),
        new_value=to_json(new_value),
        status_code=status_code,
        error_message=error_message,
    )
    sealed_now = settings.AUDIT_SEAL_ON_WRITE and not (answered_later or expecting)
    if sealed_now:
        row.save(force_insert=True)  # sealed below, so written now
    else:
        append(row)
    if state is not None:
        transaction.on_commit(state.mark_committed)
        if answered_later:
            state.awaiting_status.append(row.pk)
        elif expecting:
            state.written_expecting.append(row.pk)
    if sealed_now:
        audit_chain_seal()
        row.refresh_from_db(fields=["sequence", "prev_hash", "row_hash"])
    return row


def audit_model_change(
    *, action: AuditAction | str, instance: models.Model, previous_value=None, actor=None, request=None
) -> AdminAuditLog:
    """Shorthand for a change to one row: its type, id and new state are taken from the instance."""
    return audit_record(
        action=action,
        resource_type=resource_type_of(instance),
        resource_id=str(instance.pk),
        previous_value=previous_value,
        new_value=None if action == AuditAction.DELETE else snapshot(instance),
        actor=actor,
        request=request,
    )


def audit_rows_answered(*, row_ids: list, status_code: int) -> int:
    """Fills in the status the client got on the rows its request wrote (still unsealed: the
    sealer waits for it). Returns how many rows took it."""
    filled = _status_fill(row_ids=row_ids, status_code=status_code)
    if settings.AUDIT_SEAL_ON_WRITE:
        audit_chain_seal()
    return filled


def audit_rows_answered_as_expected(*, row_ids: list, expected: int, status_code: int) -> int:
    """The rows a request wrote with the answer it expected to give (`audit.context.audit_status_expected`),
    once the client got `status_code`: corrected if that is another (a row the sealer sealed meanwhile
    keeps what it was sealed with, and the log says so). Returns how many rows were corrected."""
    corrected = 0
    if status_code != expected:
        with transaction.atomic():
            corrected = AdminAuditLog.objects.filter(pk__in=row_ids).unsealed_update(status_code=status_code)
            sealed = AdminAuditLog.objects.filter(pk__in=row_ids, sequence__isnull=False)
            for row_id in sealed.exclude(status_code=status_code).values_list("pk", flat=True):
                logger.error("audit row %s sealed with status %s; the client got %s", row_id, expected, status_code)
    if settings.AUDIT_SEAL_ON_WRITE:
        audit_chain_seal()
    return corrected


# Not worth a wait for the disk on every audited request: a crash in the next moment loses only the
# status, and the rows are then sealed without one (AUDIT_STATUS_WAIT_SECONDS). One round trip for the
# transaction, as the response is on its way.
STATUS_FILL_TRANSACTION = "BEGIN; SET LOCAL synchronous_commit = off; {update}; COMMIT;"


def _status_fill(*, row_ids: list, status_code: int) -> int:
    if connection.vendor == "postgresql" and connection.get_autocommit():
        with connection.cursor() as cursor:
            try:
                cursor.execute(
                    STATUS_FILL_TRANSACTION.format(update=AuditLogQuerySet.unsealed_status_update_sql()),
                    [status_code, [str(row_id) for row_id in row_ids]],
                )
            except DatabaseError:
                cursor.execute("ROLLBACK")  # the explicit transaction failed midway: end it
                raise
            # The results come in order: BEGIN, SET, UPDATE (its row count), COMMIT.
            cursor.nextset()
            cursor.nextset()
            return cursor.rowcount
    # Inside a caller's transaction (or on SQLite): the same update, in a savepoint of its own.
    with transaction.atomic():
        return AdminAuditLog.objects.filter(pk__in=row_ids, status_code__isnull=True).unsealed_update(
            status_code=status_code
        )


@dataclass(frozen=True)
class SealResult:
    sealed: int
    head_sequence: int
    head_hash: str


def audit_chain_seal(*, batch_size: int | None = None) -> SealResult:
    """Appends every committed unsealed row to the hash chain, in batches of one transaction each.
    A row still waiting for its response's status is left for a later run."""
    batch_size = batch_size or settings.AUDIT_SEAL_BATCH_SIZE
    sealed = 0
    while True:
        count, head = _seal_batch(batch_size=batch_size)
        sealed += count
        if count < batch_size:
            return SealResult(sealed=sealed, head_sequence=head.sequence, head_hash=head.row_hash)


class ChainForked(Exception):
    """Rows this sealer was sealing were sealed by another: impossible under the head's lock."""


@transaction.atomic
def _seal_batch(*, batch_size: int) -> tuple[int, AuditChainHead]:
    head = _head_locked()
    status_wait_over = timezone.now() - timedelta(seconds=settings.AUDIT_STATUS_WAIT_SECONDS)
    rows = list(
        AdminAuditLog.objects.filter(sequence__isnull=True)
        .filter(Q(status_code__isnull=False) | Q(created_at__lt=status_wait_over))
        .order_by("created_at", "id")[:batch_size]
    )
    if not rows:
        return 0, head
    for row in rows:
        row.sequence, row.prev_hash = head.sequence + 1, head.row_hash
        row.row_hash = row.compute_hash()
        head.sequence, head.row_hash = row.sequence, row.row_hash
    updated = AuditLogQuerySet.seals_write(rows)
    if updated != len(rows):
        raise ChainForked(f"{len(rows) - updated} of the audit rows being sealed were sealed by another sealer")
    head.save(update_fields=["sequence", "row_hash", "updated_at"])
    return len(rows), head


def _head_locked() -> AuditChainHead:
    head = AuditChainHead.objects.select_for_update().filter(chain=ADMIN_AUDIT_CHAIN).first()
    if head is None:
        try:
            with transaction.atomic():
                AuditChainHead.objects.create(chain=ADMIN_AUDIT_CHAIN)
        except IntegrityError:
            pass  # created by a concurrent sealer, which holds it now: wait for it below
        head = AuditChainHead.objects.select_for_update().get(chain=ADMIN_AUDIT_CHAIN)
    return head
