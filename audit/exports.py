from audit.models import PaymentEvent
from billing_project.gdpr import export_section


@export_section("payment_events")
def payment_events_of(user) -> list:
    return list(PaymentEvent.objects.filter(user=user).values())
