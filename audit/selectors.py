from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from auditlog.models import LogEntry
from django.conf import settings
from django.db import models
from django.db.models import Count, Min
from django.utils import timezone

from audit.models import ADMIN_AUDIT_CHAIN, GENESIS_HASH, AdminAuditLog, AuditChainHead

# The newest entries an object's history page shows.
HISTORY_ROWS = 200


@dataclass(frozen=True)
class ChainBreak:
    sequence: int
    row_id: str | None
    reason: str

    def __str__(self):
        row = f" (row {self.row_id})" if self.row_id else ""
        return f"sequence {self.sequence}{row}: {self.reason}"


def audit_chain_verify(*, chunk_size: int = 2000, on_row: Callable[[], object] | None = None) -> ChainBreak | None:
    """Walks the sealed rows in chain order and returns the first broken link, or None if the chain
    is whole. `on_row` is called once per row read (a progress bar's update)."""
    expected_sequence, expected_prev = 1, GENESIS_HASH
    sealed = AdminAuditLog.objects.filter(sequence__isnull=False).order_by("sequence")
    for row in sealed.iterator(chunk_size=chunk_size):
        if on_row is not None:
            on_row()
        if row.sequence != expected_sequence:
            return ChainBreak(
                expected_sequence, None, f"row missing (the next row present is #{row.sequence}, {row.id})"
            )
        if row.prev_hash != expected_prev:
            return ChainBreak(row.sequence, str(row.id), "does not link to the row before it (removed or reordered)")
        if row.compute_hash() != row.row_hash:
            return ChainBreak(row.sequence, str(row.id), "content was changed after it was written")
        expected_sequence, expected_prev = row.sequence + 1, row.row_hash
    head = AuditChainHead.objects.filter(chain=ADMIN_AUDIT_CHAIN).first()
    last_sequence = expected_sequence - 1
    if head is not None and (head.sequence != last_sequence or head.row_hash != expected_prev):
        return ChainBreak(head.sequence, None, f"the newest rows are missing (the chain ends at #{last_sequence})")
    return None


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    who: str
    what: str
    detail: str
    audit_row: AdminAuditLog | None = None


def _field_changes(instance: models.Model, changes) -> list[str]:
    """The changed fields of a django-auditlog entry, as "field: old -> new". Only the row's own
    fields that changed: reverse relations (logged as e.g. `credits.CreditConsumption.None`) and
    fields created empty ("None -> None") say nothing."""
    own = {field.name for field in instance._meta.concrete_fields} | {
        field.attname for field in instance._meta.concrete_fields
    }
    if not isinstance(changes, dict):
        return []
    return [
        f"{name}: {values[0]} -> {values[1]}"
        for name, values in changes.items()
        if name in own and isinstance(values, list) and len(values) == 2 and values[0] != values[1]
    ]


def object_history(
    *, instance: models.Model, field_changes: bool = True, audit_rows: bool = True, limit: int = HISTORY_ROWS
) -> list[HistoryEntry]:
    """One object's history, newest first: its django-auditlog entries (field changes, from any
    path) and its hash-chained audit rows (who did what, and why), without entries that changed
    none of its own fields. Either part can be left out (a reader without its permission)."""
    entries = []
    log_entries = LogEntry.objects.get_for_object(instance).select_related("actor").order_by("-timestamp")[:limit]
    for entry in log_entries if field_changes else ():
        changed = _field_changes(instance, entry.changes_dict)
        if not changed:
            continue
        who = (entry.actor.email or entry.actor.get_username()) if entry.actor else "system"
        entries.append(HistoryEntry(entry.timestamp, who, f"row {entry.get_action_display()}", "; ".join(changed)))
    rows = AdminAuditLog.objects.filter(
        resource_type=instance._meta.label_lower, resource_id=str(instance.pk)
    ).order_by("-timestamp", "-sequence")[:limit]
    for row in rows if audit_rows else ():
        entries.append(
            HistoryEntry(row.timestamp, row.actor_email or "system", row.get_action_display(), reason_of(row), row)
        )
    return sorted(entries, key=lambda entry: entry.at, reverse=True)[:limit]


def _values(row: AdminAuditLog) -> list[dict]:
    return [value for value in (row.new_value, row.previous_value) if isinstance(value, dict)]


def customer_id_of(row: AdminAuditLog) -> int | None:
    """The user an audit row is about: the user it changed, or the user its values name."""
    if row.resource_type == settings.AUTH_USER_MODEL.lower() and row.resource_id.isdigit():
        return int(row.resource_id)
    for value in _values(row):
        user_id = value.get("user_id")
        if isinstance(user_id, int):
            return user_id
    return None


def reason_of(row: AdminAuditLog) -> str:
    """Why it was done, as the service recorded it."""
    for value in _values(row):
        if value.get("reason"):
            return str(value["reason"])
    return ""


@dataclass(frozen=True)
class UnsealedRows:
    count: int
    oldest: datetime | None


def audit_rows_unsealed(*, older_than: timedelta) -> UnsealedRows:
    """Committed rows still unsealed `older_than` after they were written: none while the sealer runs."""
    figures = AdminAuditLog.objects.filter(sequence__isnull=True, created_at__lt=timezone.now() - older_than).aggregate(
        count=Count("id"), oldest=Min("created_at")
    )
    return UnsealedRows(count=figures["count"], oldest=figures["oldest"])
