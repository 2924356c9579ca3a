"""Reads of the payments app."""

from django.db.models import QuerySet

from payments.models import STUCK_STATES, PaymentOperation


def operations_for_staff() -> QuerySet:
    return PaymentOperation.objects.select_related("user").order_by("-created_at")


def operations_stuck() -> QuerySet:
    """Operations a person may have to look at: waiting on the provider, or not settled automatically."""
    return PaymentOperation.objects.filter(state__in=STUCK_STATES).select_related("user").order_by("created_at")
