import hashlib
import json

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

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


class AdminAuditLog(AppendOnlyModel):
    """One row per admin write (API or console) or system event with money effects.

    Invariants: append-only; written in the same transaction as the change it records;
    rows form a hash chain in `sequence` order: row_hash = SHA-256(prev_hash + canonical content),
    so an edited, removed or reordered row breaks the chain (`manage.py verify_audit_chain`).
    """

    sequence = models.BigIntegerField(unique=True, editable=False, help_text="Position in the hash chain.")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
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
    status_code = models.PositiveSmallIntegerField(default=200)
    error_message = models.TextField(blank=True)
    timestamp = models.DateTimeField(default=timezone.now)
    prev_hash = models.CharField(max_length=64, editable=False)
    row_hash = models.CharField(max_length=64, editable=False)

    class Meta:
        ordering = ["-sequence"]
        constraints = [choices_check("action", AuditAction)]
        indexes = [
            models.Index(fields=["actor", "timestamp"], name="audit_actor_time_idx"),
            models.Index(fields=["resource_type", "resource_id"], name="audit_resource_idx"),
            models.Index(fields=["timestamp"], name="audit_time_idx"),
            models.Index(fields=["action", "timestamp"], name="audit_action_time_idx"),
        ]

    def __str__(self):
        return f"#{self.sequence} {self.action} {self.resource_type}:{self.resource_id}"

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

    Locked (`select_for_update`) by every append, which serializes appends so the chain never forks,
    and compared by verification so that removing the newest rows is detected too.
    """

    chain = models.CharField(max_length=32, unique=True, default=ADMIN_AUDIT_CHAIN)
    sequence = models.BigIntegerField(default=0)
    row_hash = models.CharField(max_length=64, default=GENESIS_HASH)

    def __str__(self):
        return f"{self.chain} head #{self.sequence}"
