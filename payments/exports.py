from billing_project.gdpr import export_section
from payments.models import Payment, PaymentEvent, PaymentOperation


@export_section("payment_events")
def payment_events_of(user) -> list:
    return list(PaymentEvent.objects.filter(user=user).values())


@export_section("payment_operations")
def payment_operations_of(user) -> list:
    return list(PaymentOperation.objects.filter(user=user).values())


@export_section("payments_received")
def payments_received_of(user) -> list:
    return list(Payment.objects.filter(user=user).values())
