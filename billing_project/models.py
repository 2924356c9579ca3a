"""Base classes every table uses, the idempotency-key store of the API, service tokens and staff
sessions, the account records of people (verified e-mail addresses, revoked refresh-token families),
and what the service tells the outside: notifications and outbound webhooks (an outbox)."""

from django.conf import settings
from django.db import models
from uuid_utils.compat import uuid7

from audit.redaction import mask_secret
from billing_project.enums import EventType


class BaseModel(models.Model):
    """A UUID primary key and the creation time.

    The keys are version 7 UUIDs (RFC 9562): they begin with the time in milliseconds, so the keys of
    new rows go to the right edge of each index that holds them, as a sequence's would. Random (version
    4) keys put every new row on a different leaf page of an index as large as its table: the ledgers
    grow without end, and such an index soon no longer fits in memory (a page read per insert, and a
    full-page image in the write-ahead log for each page first written after a checkpoint). Within a
    millisecond a process's keys count up from a random start, each with 32 more random bits; a forked
    worker draws new random numbers (uuid-utils reseeds after a fork). Nothing reads a row's time from
    its key."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class TimestampedModel(BaseModel):
    """A row that changes: also records when it last did (list `updated_at` in `update_fields`)."""

    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


def choices_check(field: str, choices: type[models.TextChoices], *, allow_blank: bool = False):
    """A CheckConstraint that makes the database refuse any value outside a TextChoices enum."""
    condition = models.Q(**{f"{field}__in": choices.values})
    if allow_blank:
        condition |= models.Q(**{field: ""})
    return models.CheckConstraint(condition=condition, name=f"%(app_label)s_%(class)s_{field}_valid")


class IdempotencyKey(BaseModel):
    """The stored outcome of a POST sent with an `Idempotency-Key` header.

    Invariant: one row per (caller, path, key); a row is written in the same transaction as the
    request's effects, so a stored response always describes a committed change. Rows older than
    IDEMPOTENCY_KEY_TTL are ignored and purged.
    """

    caller = models.CharField(max_length=100, help_text="user:<id> or service:<name>")
    path = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of the request body")
    status_code = models.PositiveSmallIntegerField()
    response_body = models.TextField(blank=True)
    content_type = models.CharField(max_length=100)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["caller", "path", "key"], name="idempotency_key_unique_per_caller_path"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_key_created_idx")]

    def __str__(self):
        # Shown in the console: the key, with the caller's credentials, would replay the response.
        return f"{self.caller} {self.path} {mask_secret(self.key)}"


class ServiceToken(TimestampedModel):
    """One issued service token. The token itself is never stored: only its id (the JWT's `jti`),
    so a token can be listed, traced to its last use and revoked on its own.

    Invariant: a service call is accepted only while its token's row exists, is not revoked and
    has not expired.
    """

    service = models.CharField(max_length=100, help_text="The calling service's name, e.g. llm-gateway.")
    scopes = models.JSONField(default=list, help_text="What the token may do, e.g. usage:write.")
    key_id = models.CharField(max_length=32, help_text="Id (`kid`) of the signing key the token was issued with.")
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="Updated at most once a minute.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_reason = models.CharField(max_length=1000, blank=True)
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["service", "expires_at"], name="service_token_service_idx")]

    def __str__(self):
        return f"{self.service} {str(self.id)[:8]}"


class StaffSession(TimestampedModel):
    """A console sign-in, so a staff member's sessions can be listed and revoked one by one.

    The session key is kept to end the session and is never shown: it is a credential.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_sessions", db_index=False
    )
    session_key = models.CharField(max_length=40, unique=True, editable=False)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=1000, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True, help_text="Signed out, or revoked.")
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["user", "created_at"], name="staff_session_user_idx")]

    def __str__(self):
        return f"{self.user} since {self.created_at:%Y-%m-%d %H:%M}"


class VerifiedEmail(BaseModel):
    """The e-mail address a user proved they receive mail at, by the signed link sent to it.

    Invariant: one row per user. The user's address counts as verified while it equals `email`
    (case-insensitively): changing the address needs a new proof.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="verified_email")
    email = models.EmailField(help_text="The address the link was sent to.")
    verified_at = models.DateTimeField()

    def __str__(self):
        return f"{self.email} verified {self.verified_at:%Y-%m-%d}"


class RevokedTokenFamily(BaseModel):
    """A refresh-token family (the tokens rotated from one sign-in) that may refresh no more.

    Append-only. Written when a token that was already rotated is presented again: either its
    holder or whoever stole it is not the legitimate client, so the whole family ends.
    """

    family = models.CharField(max_length=64, unique=True, help_text="The jti of the family's first refresh token.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    reason = models.CharField(max_length=200)

    class Meta:
        verbose_name_plural = "revoked token families"

    def __str__(self):
        return f"family {self.family} revoked"


class WebhookEndpoint(TimestampedModel):
    """A receiver of outbound events, registered by staff. Events are signed with its secret following
    the Standard Webhooks specification. Invariant: a disabled endpoint gets no new deliveries."""

    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    secret = models.CharField(max_length=100, help_text="Standard Webhooks secret, 'whsec_' + base64.")
    event_types = models.JSONField(
        default=list, blank=True, help_text="Event types or families ('credits') it receives; empty: every event."
    )
    is_active = models.BooleanField(default=True)
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="First failed delivery since its last successful one."
    )
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [models.Index(fields=["is_active"], name="webhook_endpoint_active_idx")]

    def __str__(self):
        return self.url

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types or event_type.split(".")[0] in self.event_types


class OutboundEvent(BaseModel):
    """Something that happened, written in the transaction of the change (the outbox): a rolled-back
    change leaves no event. Append-only. Its id is the `webhook-id` every delivery of it carries, so
    receivers deduplicate on it; events of one subject are delivered in `created_at` order."""

    type = models.CharField(max_length=64, choices=EventType.choices)
    subject = models.CharField(max_length=100, help_text="What it is about, e.g. 'subscription:<id>' or 'user:<id>'.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    data = models.JSONField(default=dict)

    class Meta:
        constraints = [choices_check("type", EventType)]
        indexes = [
            models.Index(fields=["subject", "created_at"], name="outbound_event_subject_idx"),
            models.Index(fields=["type", "created_at"], name="outbound_event_type_idx"),
            models.Index(fields=["created_at"], name="outbound_event_created_idx"),
        ]

    def __str__(self):
        return f"{self.type} {self.subject}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending (to be sent, or retried at next_attempt_at)"
    DELIVERED = "delivered", "Delivered (the endpoint answered 2xx)"
    FAILED = "failed", "Failed (retries exhausted, or the endpoint was disabled)"


class WebhookDelivery(TimestampedModel):
    """One event to one endpoint: its attempts, retried with exponential backoff for up to three days.
    Invariant: one row per (endpoint, event); a resend makes it pending again."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    event = models.ForeignKey(OutboundEvent, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = [
            choices_check("status", DeliveryStatus),
            models.UniqueConstraint(fields=["endpoint", "event"], name="webhook_delivery_once_per_endpoint"),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="webhook_delivery_due_idx",
            ),
            models.Index(fields=["endpoint", "created_at"], name="webhook_delivery_log_idx"),
            models.Index(fields=["created_at"], name="webhook_delivery_created_idx"),
            # What keeps a subject's later events waiting: the endpoint's deliveries still pending.
            models.Index(
                fields=["endpoint", "event"],
                condition=models.Q(status="pending"),
                name="webhook_delivery_pending_idx",
            ),
        ]

    def __str__(self):
        return f"{self.event} -> {self.endpoint}"


class Notification(BaseModel):
    """One occurrence told to a person: an e-mail (text and HTML) and the outbound event of the same
    type. Invariant: one row per (kind, occurrence), so each occurrence is told once however many
    times the code path that notices it runs."""

    kind = models.CharField(max_length=64, choices=EventType.choices)
    occurrence = models.CharField(
        max_length=200, help_text="What makes this occurrence unique, e.g. '<user id>:2026-12:80'."
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
        db_index=False,
    )
    context = models.JSONField(default=dict, blank=True)
    event = models.ForeignKey(OutboundEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            choices_check("kind", EventType),
            models.UniqueConstraint(fields=["kind", "occurrence"], name="notification_once_per_occurrence"),
        ]
        indexes = [
            models.Index(fields=["user", "created_at"], name="notification_user_idx"),
            models.Index(fields=["created_at"], name="notification_created_idx"),
        ]

    def __str__(self):
        return f"{self.kind} {self.occurrence}"
