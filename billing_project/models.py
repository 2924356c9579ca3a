"""Base classes every table uses, the idempotency-key store of the API, and the account records of
people: verified e-mail addresses and revoked refresh-token families."""

import uuid

from django.conf import settings
from django.db import models


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
        return f"{self.caller} {self.path} {self.key}"


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

    def __str__(self):
        return f"family {self.family} revoked"
