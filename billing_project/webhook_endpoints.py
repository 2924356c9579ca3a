"""Staff's webhook endpoints: registering, changing, disabling and enabling them, reading their
delivery log and resending a delivery. Each write is audited in its own transaction."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_model_change, snapshot
from billing_project.codes import ErrorCode
from billing_project.enums import EVENT_FAMILIES, EventType
from billing_project.errors import Conflict, NotFound, RuleViolation
from billing_project.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from billing_project.webhook_delivery import endpoint_deactivate, endpoint_secret_generate, endpoint_url_problem

ENDPOINT_FIELDS = frozenset({"url", "description", "event_types"})
EVENT_TYPE_CHOICES = [*EVENT_FAMILIES, *EventType.values]


def event_types_invalid(event_types) -> list[str]:
    """The entries that name neither an event type nor a family of them."""
    return [name for name in event_types if name not in EVENT_TYPE_CHOICES]


def _endpoint_save(endpoint: WebhookEndpoint) -> None:
    errors = {}
    try:
        endpoint.full_clean()
    except ValidationError as invalid:
        errors = invalid.message_dict
    if "url" not in errors and (problem := endpoint_url_problem(endpoint.url)):
        errors["url"] = [problem]
    if not isinstance(endpoint.event_types, list) or not all(isinstance(name, str) for name in endpoint.event_types):
        errors["event_types"] = ["A list of event types or families."]
    elif unknown := event_types_invalid(endpoint.event_types):
        errors["event_types"] = [f"Unknown event types: {', '.join(unknown)}."]
    if errors:
        raise RuleViolation(
            "The webhook endpoint is not valid.", code=ErrorCode.WEBHOOK_ENDPOINT_INVALID, extra={"errors": errors}
        )
    endpoint.save()


def _endpoint_locked(endpoint_id) -> WebhookEndpoint:
    try:
        endpoint = WebhookEndpoint.objects.select_for_update().filter(pk=endpoint_id).first()
    except ValidationError:
        endpoint = None
    if endpoint is None:
        raise NotFound("No webhook endpoint with this id.", code=ErrorCode.WEBHOOK_ENDPOINT_NOT_FOUND)
    return endpoint


@transaction.atomic
def endpoint_create(*, actor, url: str, description: str = "", event_types=None) -> WebhookEndpoint:
    """A new endpoint with a fresh secret (shown to staff once, at creation)."""
    endpoint = WebhookEndpoint(
        url=url, description=description, event_types=list(event_types or []), secret=endpoint_secret_generate()
    )
    _endpoint_save(endpoint)
    audit_model_change(action=AuditAction.CREATE, instance=endpoint, actor=actor)
    return endpoint


@transaction.atomic
def endpoint_update(*, endpoint_id, actor, **changes) -> WebhookEndpoint:
    unknown = set(changes) - ENDPOINT_FIELDS
    if unknown:
        raise TypeError(f"unknown webhook endpoint fields: {sorted(unknown)}")
    endpoint = _endpoint_locked(endpoint_id)
    previous = snapshot(endpoint)
    for name, value in changes.items():
        setattr(endpoint, name, value)
    _endpoint_save(endpoint)
    audit_model_change(action=AuditAction.UPDATE, instance=endpoint, previous_value=previous, actor=actor)
    return endpoint


@transaction.atomic
def endpoint_disable(*, endpoint_id, actor, reason: str = "Disabled by staff.") -> WebhookEndpoint:
    """Stops the endpoint's deliveries (its pending ones fail). Idempotent; the row and its log stay."""
    endpoint = _endpoint_locked(endpoint_id)
    if not endpoint.is_active:
        return endpoint
    previous = snapshot(endpoint)
    endpoint_deactivate(endpoint=endpoint, reason=reason)
    audit_model_change(action=AuditAction.DEACTIVATE, instance=endpoint, previous_value=previous, actor=actor)
    return endpoint


@transaction.atomic
def endpoint_enable(*, endpoint_id, actor) -> WebhookEndpoint:
    """Takes new events again, with a clean failure record. Idempotent."""
    endpoint = _endpoint_locked(endpoint_id)
    if endpoint.is_active:
        return endpoint
    previous = snapshot(endpoint)
    endpoint.is_active = True
    endpoint.disabled_at = None
    endpoint.disabled_reason = ""
    endpoint.failing_since = None
    endpoint.save(update_fields=["is_active", "disabled_at", "disabled_reason", "failing_since", "updated_at"])
    audit_model_change(action=AuditAction.ACTIVATE, instance=endpoint, previous_value=previous, actor=actor)
    return endpoint


@transaction.atomic
def delivery_resend(*, delivery_id, actor, endpoint_id=None) -> WebhookDelivery:
    """Makes a delivery pending now, from a fresh attempt count; it keeps its event, so receivers see
    the same webhook-id. Sent after commit (and by the beat job if that send is lost)."""
    deliveries = WebhookDelivery.objects.select_for_update(of=("self",)).select_related("endpoint")
    if endpoint_id is not None:
        deliveries = deliveries.filter(endpoint_id=endpoint_id)
    try:
        delivery = deliveries.filter(pk=delivery_id).first()
    except ValidationError:
        delivery = None
    if delivery is None:
        raise NotFound("No webhook delivery with this id.", code=ErrorCode.WEBHOOK_DELIVERY_NOT_FOUND)
    if not delivery.endpoint.is_active:
        raise Conflict(
            "The endpoint is disabled: enable it before resending.", code=ErrorCode.WEBHOOK_ENDPOINT_DISABLED
        )
    previous = snapshot(delivery)
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = timezone.now()
    delivery.delivered_at = None
    delivery.save(update_fields=["status", "attempts", "next_attempt_at", "delivered_at", "updated_at"])
    audit_model_change(action=AuditAction.PROCESS, instance=delivery, previous_value=previous, actor=actor)
    event_id = delivery.event_id
    transaction.on_commit(lambda: _event_send(event_id))
    return delivery


def _event_send(event_id) -> None:
    from billing_project.tasks import webhook_event_deliver

    webhook_event_deliver.delay(str(event_id))


def endpoints_for_staff() -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.order_by("-created_at")


def deliveries_of_endpoint(*, endpoint_id) -> QuerySet[WebhookDelivery]:
    """The endpoint's delivery log, newest first (index webhook_delivery_log_idx)."""
    try:
        exists = WebhookEndpoint.objects.filter(pk=endpoint_id).exists()
    except ValidationError:
        exists = False
    if not exists:
        raise NotFound("No webhook endpoint with this id.", code=ErrorCode.WEBHOOK_ENDPOINT_NOT_FOUND)
    return (
        WebhookDelivery.objects.filter(endpoint_id=endpoint_id).select_related("event").order_by("-created_at", "-id")
    )
