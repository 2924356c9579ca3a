"""A user's personal data in the provider objects kept on webhook events (GDPR). The events stay (the
financial record: ids, amounts, statuses, times), but once their user is erased the personal fields
of every Stripe object in them (names, e-mail addresses, phones, postal addresses, card details,
links to documents that show them) are emptied, in the payload and in the objects read from Stripe
(`fetched`), and the signed raw body, which holds all of them, is dropped."""

from django.db import transaction

from audit.models import AuditAction
from audit.services import audit_record
from payments.selectors import webhook_events_of

# Fields of Stripe objects (customers, checkout sessions, invoices, charges, payment methods) that
# hold personal data; each is nullable in Stripe's shapes, so they are set to null.
PERSONAL_FIELDS = frozenset(
    {
        "address",
        "billing_details",
        "customer_address",
        "customer_details",
        "customer_email",
        "customer_name",
        "customer_phone",
        "customer_shipping",
        "customer_tax_ids",
        "email",
        "hosted_invoice_url",
        "invoice_pdf",
        "name",
        "payment_method_details",
        "phone",
        "receipt_email",
        "receipt_url",
        "shipping",
        "shipping_details",
        "collected_information",
    }
)
# A customer's description and metadata are free text about the person.
CUSTOMER_FIELDS = frozenset({"description", "metadata"})


def personal_data_redacted(value):
    """`value` (a Stripe object, an event, a list of them) with every personal field set to null."""
    if isinstance(value, list):
        return [personal_data_redacted(item) for item in value]
    if not isinstance(value, dict):
        return value
    personal = PERSONAL_FIELDS | (CUSTOMER_FIELDS if value.get("object") == "customer" else frozenset())
    return {key: None if key in personal else personal_data_redacted(item) for key, item in value.items()}


@transaction.atomic
def webhook_events_redact(*, user) -> int:
    """Empties the personal data of the user's Stripe objects on every event that carries them
    (webhook_events_of), before the user goes. Returns how many events were redacted; audited."""
    redacted = 0
    for event in webhook_events_of(user=user).select_for_update():
        event.payload = personal_data_redacted(event.payload)
        event.fetched = personal_data_redacted(event.fetched)
        event.raw_body = ""
        event.save(update_fields=["payload", "fetched", "raw_body", "updated_at"])
        redacted += 1
    if redacted:
        audit_record(
            action=AuditAction.UPDATE,
            resource_type="payments.webhookevent",
            resource_id="",
            new_value={"personal_data_erased_for_user": user.pk, "events": redacted},
        )
    return redacted


def user_deleting(sender, instance, **kwargs) -> None:
    """pre_delete of the user model (the GDPR erasure, or any other deletion): while the user's
    Stripe ids are still recorded, the events carrying their Stripe objects are redacted."""
    webhook_events_redact(user=instance)
