"""Base classes every table uses, the idempotency-key store of the API, service tokens and staff
sessions, and the account records of people: verified e-mail addresses and revoked refresh-token families."""

import uuid

from django.conf import settings
from django.db import models

from audit.redaction import mask_secret


class BaseModel(models.Model):
    """A UUID primary key and the creation time."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
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

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_sessions")
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
