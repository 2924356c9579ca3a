"""Service tokens: issued with a record (id, service, scopes, expiry, signing key id), listed in the
console, revoked one by one. Only the record is stored, never the token."""

import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache, caches
from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_model_change, snapshot
from billing_project.auth import (
    SERVICE_TOKEN_CACHE_SECONDS,
    service_token_cache_key,
    service_token_encode,
    signing_key_id,
)
from billing_project.codes import ErrorCode
from billing_project.errors import Conflict, NotFound, RuleViolation
from billing_project.models import ServiceToken


@dataclass(frozen=True)
class IssuedServiceToken:
    token: str
    record: ServiceToken


def _lifetime_refused() -> RuleViolation:
    return RuleViolation(
        f"A service token lives 1 to {settings.SERVICE_TOKEN_MAX_LIFETIME_DAYS} days.",
        code=ErrorCode.SERVICE_TOKEN_LIFETIME_INVALID,
    )


def service_token_lifetime(*, days: int | None) -> timedelta:
    """`days` (a person's choice, so at least one), or SERVICE_TOKEN_LIFETIME_DAYS."""
    days = settings.SERVICE_TOKEN_LIFETIME_DAYS if days is None else days
    if days < 1:
        raise _lifetime_refused()
    return timedelta(days=days)


@transaction.atomic
def service_token_issue(
    *, service: str, scopes: list[str], lifetime: timedelta | None = None, actor=None
) -> IssuedServiceToken:
    """Records and signs a new token; `lifetime` defaults to SERVICE_TOKEN_LIFETIME_DAYS and is never
    longer than SERVICE_TOKEN_MAX_LIFETIME_DAYS, whoever asks."""
    lifetime = service_token_lifetime(days=None) if lifetime is None else lifetime
    if lifetime > timedelta(days=settings.SERVICE_TOKEN_MAX_LIFETIME_DAYS):
        raise _lifetime_refused()
    now = timezone.now()
    record = ServiceToken.objects.create(
        id=uuid.uuid4(),
        service=service,
        scopes=sorted(set(scopes)),
        key_id=signing_key_id(settings.SERVICE_JWT_SECRET),
        expires_at=now + lifetime,
        issued_by=actor,
    )
    audit_model_change(action=AuditAction.CREATE, instance=record, actor=actor)
    token = service_token_encode(
        token_id=str(record.pk), service=service, scopes=record.scopes, issued_at=now, expires_at=record.expires_at
    )
    return IssuedServiceToken(token=token, record=record)


@transaction.atomic
def service_token_revoke(*, token_id, actor=None, reason: str = "") -> ServiceToken:
    """Revokes one token. Takes effect on every worker once this commits (the token's cached state
    is overwritten then)."""
    try:
        record = ServiceToken.objects.select_for_update().filter(pk=uuid.UUID(str(token_id))).first()
    except ValueError:
        record = None
    if record is None:
        raise NotFound("No service token with this id.", code=ErrorCode.SERVICE_TOKEN_NOT_FOUND)
    if record.revoked_at is not None:
        raise Conflict("The service token is already revoked.", code=ErrorCode.SERVICE_TOKEN_ALREADY_REVOKED)
    previous = snapshot(record)
    record.revoked_at = timezone.now()
    record.revoked_by = actor if actor is not None and actor.pk else None
    record.revoked_reason = reason
    record.save(update_fields=["revoked_at", "revoked_by", "revoked_reason", "updated_at"])
    audit_model_change(action=AuditAction.REVOKE, instance=record, previous_value=previous, actor=actor)
    key = service_token_cache_key(str(record.pk))

    def revoked_everywhere():
        cache.set(key, 0, timeout=SERVICE_TOKEN_CACHE_SECONDS)
        caches["process"].delete(key)

    transaction.on_commit(revoked_everywhere)
    return record
