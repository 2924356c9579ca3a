from billing_project.gdpr import export_section
from subscriptions.models import BillingInvoice, PaymentTransaction, Subscription, UserEntitlement


@export_section("subscriptions")
def subscriptions_of(user) -> dict:
    return {
        "subscriptions": list(Subscription.objects.filter(user=user).values()),
        "invoices": list(BillingInvoice.objects.filter(user=user).values()),
        "payments": list(PaymentTransaction.objects.filter(user=user).values()),
        "entitlement": UserEntitlement.objects.filter(user=user).values().first(),
    }
