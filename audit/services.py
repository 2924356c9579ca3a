"""Writing the admin audit trail. Every admin write calls `audit_record` inside its own transaction,
so the change and its record commit or roll back together."""

import json
import logging

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction

from audit.context import current_request_audit
from audit.models import ADMIN_AUDIT_CHAIN, AdminAuditLog, AuditAction, AuditChainHead
from audit.redaction import REDACTED, mask_license_key, redact
from billing_project.net import client_ip

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


def to_json(value):
    """A JSON-native copy (Decimals, dates and UUIDs as strings), as the database will return it."""
    if value is None:
        return None
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


# Credentials a row may hold: a password hash, an authenticator's secret, an idempotency key.
SECRET_FIELDS = frozenset({"password", "key"})


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


def _actor_of(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None, ""
    if getattr(user, "pk", None) is None:
        return None, str(user)  # a service principal
    return user, user.email or user.get_username()


def _ip_field_value(ip: str | None) -> str | None:
    return AdminAuditLog._meta.get_field("ip_address").get_prep_value(ip) if ip else None


@transaction.atomic
def audit_record(
    *,
    action: AuditAction | str,
    resource_type: str,
    resource_id: str = "",
    previous_value=None,
    new_value=None,
    actor=None,
    status_code: int = 200,
    error_message: str = "",
    request=None,
) -> AdminAuditLog:
    """Appends one row to the hash chain, inside the caller's transaction.

    The request (endpoint, method, IP, user agent, redacted body, actor) comes from the argument or
    from the request being served; tasks and commands pass `actor` and no request.
    """
    state = current_request_audit.get()
    if request is None and state is not None:
        request = state.request
    actor_email = ""
    if actor is not None:
        actor_email = actor.email or actor.get_username()
    elif request is not None:
        actor, actor_email = _actor_of(request)

    # The head row is the chain's lock: appends are serialized until this transaction ends.
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(chain=ADMIN_AUDIT_CHAIN)
    row = AdminAuditLog(
        sequence=head.sequence + 1,
        prev_hash=head.row_hash,
        actor=actor,
        actor_email=actor_email,
        action=action,
        resource_type=resource_type,
        resource_id=str(resource_id or ""),
        endpoint=request.path[:255] if request is not None else "",
        method=request.method if request is not None else "",
        ip_address=_ip_field_value(client_ip(request)) if request is not None else None,
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:1000] if request is not None else "",
        request_body=_storable(to_json(_request_body(request))) if request is not None else None,
        previous_value=to_json(previous_value),
        new_value=to_json(new_value),
        status_code=status_code,
        error_message=error_message,
    )
    row.row_hash = row.compute_hash()
    row.save(force_insert=True)
    head.sequence, head.row_hash = row.sequence, row.row_hash
    head.save(update_fields=["sequence", "row_hash", "updated_at"])
    if state is not None:
        transaction.on_commit(state.mark_committed)
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
