"""The payment facts log (`PaymentEvent`): one row per movement of money or provider fact handled."""

from audit.services import to_json
from billing_project import sql
from billing_project.appends import append
from payments.models import PaymentEvent


def payment_event_record(
    *,
    event_type: str,
    user=None,
    plan_code: str = "",
    customer_id: str = "",
    invoice_id: str = "",
    subscription_id: str = "",
    amount: int | None = None,
    currency: str = "",
    metadata: dict | None = None,
    webhook_event=None,
) -> PaymentEvent:
    event = sql.new_row(
        PaymentEvent,
        user=user,
        event_type=event_type,
        plan_code=plan_code,
        customer_id=customer_id,
        invoice_id=invoice_id,
        subscription_id=subscription_id,
        amount=amount,
        currency=currency,
        metadata=to_json(metadata or {}),
        webhook_event=webhook_event,
    )
    append(event)
    return event
