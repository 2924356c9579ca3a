"""What the service tells the outside, written in the transaction of the change that caused it.

`event_emit` records an `OutboundEvent` (the outbox) and one pending `WebhookDelivery` for each active
endpoint that wants its type; deliveries start only after the transaction commits, so a rolled-back
change is never announced. `notify` tells a person of one occurrence, once: the notification row is
unique per (kind, occurrence), and its e-mail and outbound event go out only the first time.
"""

from functools import cache

from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction

from billing_project import sql
from billing_project.appends import append
from billing_project.enums import EventType
from billing_project.models import DeliveryStatus, Notification, OutboundEvent, WebhookDelivery, WebhookEndpoint


def event_emit(*, type: EventType | str, subject: str, data: dict, user=None) -> OutboundEvent:
    """Records the event and its deliveries in the caller's transaction. `subject` names what it is
    about ('subscription:<id>'); receivers get one subject's events in the order they were emitted.
    `data` must be JSON (ids and amounts as strings, credits as integers)."""
    event = sql.new_row(OutboundEvent, type=type, subject=subject, data=data, user=user)
    # An event is emitted in most money operations (a renewal emits three): the row and the read of
    # the active endpoints go with the operation's other appended rows (billing_project.appends).
    append(event, read=_active_endpoints_statement(), then=lambda endpoint_rows: _deliveries_add(event, endpoint_rows))
    return event


def _deliveries_add(event: OutboundEvent, endpoint_rows: list[tuple]) -> None:
    event_types = WebhookEndpoint._meta.get_field("event_types")
    endpoints = [
        WebhookEndpoint(id=sql.converted(WebhookEndpoint._meta.pk, pk), event_types=sql.converted(event_types, types))
        for pk, types in endpoint_rows
    ]
    endpoints = [endpoint for endpoint in endpoints if endpoint.wants(event.type)]
    if endpoints:
        WebhookDelivery.objects.bulk_create(
            WebhookDelivery(
                endpoint=endpoint, event=event, status=DeliveryStatus.PENDING, next_attempt_at=event.created_at
            )
            for endpoint in endpoints
        )
        transaction.on_commit(lambda: _deliveries_start(event.pk))


@cache
def _active_endpoints_statement() -> sql.Statement:
    """The ORM's query for the active endpoints, compiled once per process."""
    query = WebhookEndpoint.objects.filter(is_active=True).values_list("id", "event_types").query
    statement, params = query.get_compiler(using=DEFAULT_DB_ALIAS).as_sql()
    return statement, list(params)


def _deliveries_start(event_id) -> None:
    from billing_project.tasks import webhook_event_deliver

    webhook_event_deliver.delay(str(event_id))


def notify(*, user, kind: EventType | str, occurrence: str, context: dict, subject: str = "") -> Notification | None:
    """Tells `user` (None: the staff, at ADMINS) of one occurrence of `kind`, once. `occurrence`
    names it among others of its kind ('<user id>:2026-12:80' for the 80 % budget threshold of
    December); a second call with the same (kind, occurrence) does nothing and returns None.
    `context` (JSON) fills the e-mail templates `notifications/email/<kind>.{txt,html}` and is the
    outbound event's data."""
    try:
        with transaction.atomic():
            notification = Notification.objects.create(kind=kind, occurrence=occurrence, user=user, context=context)
    except IntegrityError:
        return None
    notification.event = event_emit(
        type=kind, subject=subject or (f"user:{user.pk}" if user else "staff"), data=context, user=user
    )
    notification.save(update_fields=["event"])
    transaction.on_commit(lambda: _email_send(notification.pk))
    return notification


def _email_send(notification_id) -> None:
    from billing_project.tasks import notification_email_send

    notification_email_send.delay(str(notification_id))
