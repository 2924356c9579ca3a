from datetime import timedelta
from decimal import Decimal

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from billing_project.enums import BillingCycle, SubscriptionTier
from billing_project.tests.factories import UserFactory
from payments.models import WebhookEvent, WebhookProvider, WebhookStatus
from subscriptions.models import (
    BillingInvoice,
    ChangeType,
    DunningAttempt,
    DunningResult,
    InvoiceStatus,
    PaymentStatus,
    PaymentTransaction,
    ProrationEvent,
    ProrationStatus,
    Subscription,
    SubscriptionStatus,
    TierConfig,
    UserEntitlement,
)

PERIOD = timedelta(days=30)


class TierConfigFactory(DjangoModelFactory):
    """One row per tier (unique): asking for a tier that exists returns it."""

    class Meta:
        model = TierConfig
        django_get_or_create = ("tier",)

    tier = SubscriptionTier.PRO
    display_name = factory.LazyAttribute(lambda o: SubscriptionTier(o.tier).label)
    monthly_price_usd = Decimal("19.00")
    annual_price_usd = Decimal("190.00")
    monthly_credit_allocation = 20_000
    entitlements = factory.Dict({"max_devices": 3, "api_access": True, "support": "email"})


class SubscriptionFactory(DjangoModelFactory):
    class Meta:
        model = Subscription

    user = factory.SubFactory(UserFactory)
    tier = SubscriptionTier.PRO
    billing_cycle = BillingCycle.MONTHLY
    status = SubscriptionStatus.ACTIVE
    base_price_usd = Decimal("19.00")
    monthly_credit_allocation = 20_000
    current_period_start = factory.LazyFunction(timezone.now)
    current_period_end = factory.LazyAttribute(lambda o: o.current_period_start + PERIOD)
    stripe_customer_id = factory.Sequence(lambda n: f"cus_test_{n}")
    stripe_subscription_id = factory.Sequence(lambda n: f"sub_test_{n}")


class BillingInvoiceFactory(DjangoModelFactory):
    class Meta:
        model = BillingInvoice

    user = factory.SubFactory(UserFactory)
    subscription = factory.SubFactory(SubscriptionFactory, user=factory.SelfAttribute("..user"))
    subtotal_usd = Decimal("19.00")
    amount_due_usd = Decimal("19.00")
    status = InvoiceStatus.OPEN
    period_start = factory.LazyFunction(timezone.now)
    period_end = factory.LazyAttribute(lambda o: o.period_start + PERIOD)
    stripe_invoice_id = factory.Sequence(lambda n: f"in_test_{n}")


class PaymentTransactionFactory(DjangoModelFactory):
    class Meta:
        model = PaymentTransaction

    user = factory.SubFactory(UserFactory)
    invoice = factory.SubFactory(BillingInvoiceFactory, user=factory.SelfAttribute("..user"))
    subscription = factory.LazyAttribute(lambda o: o.invoice.subscription if o.invoice else None)
    amount_usd = Decimal("19.00")
    status = PaymentStatus.SUCCEEDED
    payment_method_type = "card"
    stripe_payment_intent_id = factory.Sequence(lambda n: f"pi_test_{n}")
    completed_at = factory.LazyFunction(timezone.now)


class DunningAttemptFactory(DjangoModelFactory):
    class Meta:
        model = DunningAttempt

    user = factory.SubFactory(UserFactory)
    invoice = factory.SubFactory(BillingInvoiceFactory, user=factory.SelfAttribute("..user"))
    subscription = factory.LazyAttribute(lambda o: o.invoice.subscription)
    attempt_number = factory.Sequence(lambda n: n + 1)
    scheduled_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=1))
    result = DunningResult.SCHEDULED


class UserEntitlementFactory(DjangoModelFactory):
    class Meta:
        model = UserEntitlement

    user = factory.SubFactory(UserFactory)
    tier = SubscriptionTier.PRO
    entitlements = factory.Dict({"max_devices": 3, "api_access": True})
    activated_at = factory.LazyFunction(timezone.now)


class ProrationEventFactory(DjangoModelFactory):
    """The seed check: pro -> pro_max with 15 of 30 days left."""

    class Meta:
        model = ProrationEvent

    user = factory.SubFactory(UserFactory)
    subscription = factory.SubFactory(SubscriptionFactory, user=factory.SelfAttribute("..user"))
    from_tier = SubscriptionTier.PRO
    to_tier = SubscriptionTier.PRO_MAX
    change_type = ChangeType.UPGRADE
    days_remaining = 15
    days_in_cycle = 30
    unused_credit_value_usd = Decimal("9.50")
    new_tier_prorated_cost_usd = Decimal("19.50")
    net_charge_usd = Decimal("10.00")
    credits_adjustment = 15_000
    effective_date = factory.LazyFunction(timezone.now)
    status = ProrationStatus.PENDING


class WebhookEventFactory(DjangoModelFactory):
    class Meta:
        model = WebhookEvent

    provider = WebhookProvider.STRIPE
    event_id = factory.Sequence(lambda n: f"evt_test_{n}")
    event_type = "invoice.paid"
    payload = factory.LazyAttribute(lambda o: {"id": o.event_id, "type": o.event_type, "data": {"object": {}}})
    event_created_at = factory.LazyFunction(timezone.now)
    status = WebhookStatus.RECEIVED
