from billing_project.gdpr import export_section
from payments.models import Payment, PaymentEvent, PaymentOperation
from payments.selectors import webhook_events_of


@export_section("payment_events")
def payment_events_of(user) -> list:
    return list(PaymentEvent.objects.filter(user=user).values())


@export_section("payment_operations")
def payment_operations_of(user) -> list:
    return list(PaymentOperation.objects.filter(user=user).values())


@export_section("payments_received")
def payments_received_of(user) -> list:
    return list(Payment.objects.filter(user=user).values())


@export_section("stripe_events")
def stripe_events_of(user) -> list:
    """The Stripe events that carry the user's objects, each with the objects read from Stripe for it."""
    return list(
        webhook_events_of(user=user).values(
            "event_id", "event_type", "event_created_at", "received_at", "status", "object_id", "payload", "fetched"
        )
    )
