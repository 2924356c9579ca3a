"""Reads of the payments app."""

from django.db.models import QuerySet

from payments.models import STUCK_STATES, PaymentOperation, WebhookEvent, WebhookStatus


def operations_for_staff() -> QuerySet:
    return PaymentOperation.objects.select_related("user").order_by("-created_at")


def operations_stuck() -> QuerySet:
    """Operations a person may have to look at: waiting on the provider, or not settled automatically."""
    return PaymentOperation.objects.filter(state__in=STUCK_STATES).select_related("user").order_by("created_at")


def webhook_events_unmatched() -> QuerySet:
    """Events about objects nothing here is linked to, newest first: for staff to link and process again."""
    return WebhookEvent.objects.filter(status=WebhookStatus.UNMATCHED).defer("raw_body").order_by("-received_at")
