"""Reads of the payments app."""

from django.db.models import Q, QuerySet

from payments.models import (
    STUCK_STATES,
    Payment,
    PaymentEvent,
    PaymentOperation,
    StripeCustomer,
    WebhookEvent,
    WebhookStatus,
)


def operations_for_staff() -> QuerySet:
    return PaymentOperation.objects.select_related("user").order_by("-created_at")


def operations_stuck() -> QuerySet:
    """Operations a person may have to look at: waiting on the provider, or not settled automatically."""
    return PaymentOperation.objects.filter(state__in=STUCK_STATES).select_related("user").order_by("created_at")


def webhook_events_unmatched() -> QuerySet:
    """Events about objects nothing here is linked to, newest first: for staff to link and process again."""
    return WebhookEvent.objects.filter(status=WebhookStatus.UNMATCHED).defer("raw_body").order_by("-received_at")


def _ids(queryset, *fields) -> set[str]:
    return {value for row in queryset.values_list(*fields) for value in row if value}


def webhook_events_of(*, user) -> QuerySet:
    """The provider events that carry the user's Stripe objects (their customer, its checkouts,
    subscriptions, invoices, payments), in their payload or among the objects read from Stripe for
    them (`fetched`): found through every Stripe id recorded for the user, and the checkouts that
    name the user. Oldest first. (A scan of the events' JSON: for an export or an erasure.)"""
    customers = _ids(StripeCustomer.objects.filter(user=user), "stripe_customer_id")
    customers |= _ids(PaymentOperation.objects.filter(user=user), "stripe_customer_id")
    customers |= _ids(PaymentEvent.objects.filter(user=user), "customer_id")
    objects = customers | _ids(
        PaymentOperation.objects.filter(user=user),
        "stripe_checkout_session_id",
        "stripe_invoice_id",
        "stripe_payment_intent_id",
        "stripe_refund_id",
    )
    objects |= _ids(
        Payment.objects.filter(user=user),
        "stripe_payment_intent_id",
        "stripe_charge_id",
        "stripe_invoice_id",
        "stripe_checkout_session_id",
    )
    objects |= _ids(PaymentEvent.objects.filter(user=user), "invoice_id", "subscription_id")
    about_user = Q(payload__data__object__client_reference_id=str(user.pk))
    if objects:
        about_user |= (
            Q(object_id__in=objects)
            | Q(payload__data__object__customer__in=sorted(customers))
            | Q(fetched__has_any_keys=sorted(objects))
        )
    return WebhookEvent.objects.filter(about_user).order_by("received_at", "pk")
