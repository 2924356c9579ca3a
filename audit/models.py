import hashlib
import json
from functools import cache

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from billing_project import sql
from billing_project.models import BaseModel, TimestampedModel, choices_check

GENESIS_HASH = "0" * 64


class AppendOnlyError(Exception):
    """Raised on any attempt to change or remove an append-only row."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only.")

    def delete(self):
        raise AppendOnlyError(f"{self.model.__name__} rows are never deleted.")


class AppendOnlyModel(BaseModel):
    """Rows are inserted once and never changed or deleted from the application.

    PostgreSQL enforces the same with a trigger (see the migrations); the only change it lets through
    is a foreign key to a deleted user becoming NULL.
    """

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows are never deleted.")


class AuditAction(models.TextChoices):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    READ = "read"
    EXPORT = "export"
    APPROVE = "approve"
    REJECT = "reject"
    GRANT = "grant"
    REVERSE = "reverse"
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    SUSPEND = "suspend"
    REVOKE = "revoke"
    RESOLVE = "resolve"
    TRANSITION = "transition"
    PROCESS = "process"
    REPAIR = "repair"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOCKOUT = "lockout"


class AuditLogQuerySet(AppendOnlyQuerySet):
    def unsealed_update(self, **values) -> int:
        """The only updates an audit row takes, and only while it is unsealed: the sealer's
        `sequence`/`prev_hash`/`row_hash`, and the status of the response its request got
        (PostgreSQL's trigger refuses anything else, and any change at all to a sealed row)."""
        return models.QuerySet.update(self.filter(sequence__isnull=True), **values)

    @staticmethod
    def seals_write(rows: "list[AdminAuditLog]") -> int:
        """`unsealed_update` of the sealer's `sequence`, `prev_hash` and `row_hash` of each row, in one
        statement on PostgreSQL (an UPDATE from the rows' values: a CASE per column cost 0.4 ms per
        row for the ORM to compile, bench/webhooks_cpu.py). Returns how many rows were unsealed."""
        sequence = f"{sql.table(AdminAuditLog)}.{sql.column(AdminAuditLog, 'sequence')}"
        written = 0
        with sql.default_connection().cursor() as cursor:
            for statement in sql.update_many(rows, ["sequence", "prev_hash", "row_hash"], where=f"{sequence} IS NULL"):
                cursor.execute(*sql.joined([statement]))
                written += cursor.rowcount
        return written

    @staticmethod
    @cache
    def unsealed_status_update_sql() -> str:
        """`unsealed_update` of the status of rows by id, for a caller that sends it inside SQL of its
        own on PostgreSQL (parameters: the status, the ids). Written out once: the ORM compiled it on
        every audited request."""
        status_code, sequence = sql.column(AdminAuditLog, "status_code"), sql.column(AdminAuditLog, "sequence")
        return (
            f"UPDATE {sql.table(AdminAuditLog)} SET {status_code} = %s WHERE {sql.column(AdminAuditLog, 'id')} = "
            f"ANY(%s::uuid[]) AND {status_code} IS NULL AND {sequence} IS NULL"
        )


class AdminAuditLog(AppendOnlyModel):
    """One row per admin write (API or console) or system event with money effects.

    Invariants: written in the same transaction as the change it records, unsealed (no `sequence`,
    no hashes) and without touching any shared row; the sealer (`audit.services.audit_chain_seal`)
    then appends it to the hash chain once: sequence, prev_hash and row_hash = SHA-256(prev_hash +
    canonical content). From then on the row never changes, and an edited, removed or reordered
    sealed row breaks the chain (`manage.py verify_audit_chain`).
    """

    objects = AuditLogQuerySet.as_manager()

    sequence = models.BigIntegerField(
        unique=True, null=True, editable=False, help_text="Position in the hash chain; empty until sealed."
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    actor_email = models.CharField(
        max_length=254, blank=True, help_text="Snapshot of who acted: an audit row outlives its admin."
    )
    action = models.CharField(max_length=20, choices=AuditAction.choices)
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64, blank=True)
    endpoint = models.CharField(max_length=255, blank=True)
    method = models.CharField(max_length=10, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    request_body = models.JSONField(null=True, blank=True, help_text="Secrets redacted.")
    previous_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The HTTP status the client received; empty while its response is on its way."
    )
    error_message = models.TextField(blank=True)
    timestamp = models.DateTimeField(default=timezone.now)
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    row_hash = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        ordering = ["-timestamp", "-id"]
        constraints = [choices_check("action", AuditAction)]
        indexes = [
            models.Index(fields=["actor", "timestamp"], name="audit_actor_time_idx"),
            models.Index(fields=["resource_type", "resource_id"], name="audit_resource_idx"),
            models.Index(fields=["timestamp"], name="audit_time_idx"),
            models.Index(fields=["action", "timestamp"], name="audit_action_time_idx"),
            # The sealer's queue: only unsealed rows are in it, so it stays small.
            models.Index(
                fields=["created_at", "id"], condition=models.Q(sequence__isnull=True), name="audit_unsealed_idx"
            ),
        ]

    def __str__(self):
        return f"{self.position} {self.action} {self.resource_type}:{self.resource_id}"

    @property
    def is_sealed(self) -> bool:
        return self.sequence is not None

    @property
    def prev_hash_if_sealed(self) -> str | None:
        return self.prev_hash if self.is_sealed else None

    @property
    def row_hash_if_sealed(self) -> str | None:
        return self.row_hash if self.is_sealed else None

    @property
    def position(self) -> str:
        """Where the row stands in the chain, as the console and the API show it."""
        return f"#{self.sequence}" if self.is_sealed else "unsealed"

    def canonical_content(self) -> str:
        """The hashed content. `actor` is left out on purpose: deleting a user sets it to NULL
        (GDPR) and must not break the chain; `actor_email` keeps who it was."""
        content = {
            "id": str(self.id),
            "sequence": self.sequence,
            "actor_email": self.actor_email,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "endpoint": self.endpoint,
            "method": self.method,
            "ip_address": self.ip_address,
            "user_agent": self.user_agent,
            "request_body": self.request_body,
            "previous_value": self.previous_value,
            "new_value": self.new_value,
            "status_code": self.status_code,
            "error_message": self.error_message,
            "timestamp": self.timestamp.isoformat(timespec="microseconds"),
        }
        return json.dumps(content, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)

    def compute_hash(self) -> str:
        return hashlib.sha256((self.prev_hash + self.canonical_content()).encode()).hexdigest()


ADMIN_AUDIT_CHAIN = "admin_audit"


class AuditChainHead(TimestampedModel):
    """The row that names the end of the audit chain (one per chain).

    Locked (`select_for_update`) by the sealer and by nothing else: sealers run one at a time, so
    the chain never forks, while writers of audit rows never wait for it. Compared by verification
    so that removing the newest sealed rows is detected too.
    """

    chain = models.CharField(max_length=32, unique=True, default=ADMIN_AUDIT_CHAIN)
    sequence = models.BigIntegerField(default=0)
    row_hash = models.CharField(max_length=64, default=GENESIS_HASH)

    def __str__(self):
        return f"{self.chain} head #{self.sequence}"
