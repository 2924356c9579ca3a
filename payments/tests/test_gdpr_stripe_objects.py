"""A user's Stripe objects kept on webhook events (in the payload and among the objects read from
Stripe for them) are part of the user's data: in the export, and emptied of personal data when the
user is erased, while the events stay for the financial record."""

import hashlib
import json

import pytest
from rest_framework.test import APIClient

from audit.models import AdminAuditLog, AuditAction
from payments import stripe_api
from payments.models import WebhookEvent
from subscriptions.services import tier_catalog_seed
from subscriptions.tests.conftest import (
    StripeIds,
    customer_register,
    deliver,
    stripe_event,
    subscribe_through_checkout,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_http")]

PERSON = "Jenny Rosen"


@pytest.fixture
def webhook_client() -> APIClient:
    tier_catalog_seed()
    return APIClient()


def carries(event: WebhookEvent, text: str) -> bool:
    return text in json.dumps(event.payload) or text in json.dumps(event.fetched) or text in event.raw_body


@pytest.fixture
def stripe_history(webhook_client):
    """A customer who subscribed through Checkout, whose customer Stripe updated, and who paid a second
    checkout naming only their customer (read from Stripe before processing); and someone else's event."""
    user = customer_register("customer@example.com")
    ids = StripeIds.new()
    subscribe_through_checkout(webhook_client, user, ids)  # the session carries customer_details
    deliver(
        webhook_client,
        stripe_event("customer.updated", ids, email=user.email, metadata={"user_id": str(user.pk)}),  # named PERSON
    )
    stripe_customer = stripe_api.client().v1.customers.create(
        params={"email": user.email, "name": PERSON, "metadata": {"user_id": str(user.pk)}}
    )
    second = StripeIds.new()
    deliver(
        webhook_client,
        stripe_event(
            "checkout.session.completed",
            StripeIds(**{**second.__dict__, "customer": stripe_customer.id}),
            client_reference_id=None,
            customer_email=user.email,
            metadata={"kind": "license", "version": "1.0.0"},
            mode="payment",
            subscription=None,
            invoice=None,
        ),
    )
    other = customer_register("other@example.com")
    others = stripe_event("customer.updated", StripeIds.new(), email="other@example.com")
    others["data"]["object"] |= {"name": "Other Person", "metadata": {"user_id": str(other.pk)}}
    deliver(webhook_client, others)
    return user, stripe_customer.id, others["id"]


def test_the_export_holds_the_stripe_objects_of_the_users_events(staff_client, stripe_history):
    user, fetched_customer, others_event = stripe_history

    body = staff_client.get(f"/api/v1/admin/users/{user.pk}/").json()["stripe_events"]

    assert [row["event_type"] for row in body] == [
        "checkout.session.completed",
        "customer.updated",
        "checkout.session.completed",
    ]
    assert others_event not in {row["event_id"] for row in body}
    assert body[0]["payload"]["data"]["object"]["customer_details"]["name"] == PERSON
    assert body[2]["fetched"][fetched_customer]["email"] == user.email


def test_the_audit_rows_of_a_stripe_event_refer_to_its_verified_body_and_hold_no_copy(stripe_history):
    user, _, _ = stripe_history
    rows = AdminAuditLog.objects.filter(endpoint="/api/v1/billing/webhooks/stripe/")

    assert rows.count() >= 2
    for row in rows:
        event = WebhookEvent.objects.get(event_id=row.request_body["stripe_event_id"])
        assert row.request_body == {
            "stripe_event_id": event.event_id,
            "stored_in": "payments.webhookevent",
            "sha256": hashlib.sha256(event.raw_body.encode()).hexdigest(),
        }
        assert user.email not in json.dumps(row.request_body)


def test_erasing_the_user_empties_the_personal_data_of_their_stripe_objects_and_keeps_the_events(
    staff_client, stripe_history
):
    user, fetched_customer, others_event = stripe_history
    theirs = list(WebhookEvent.objects.exclude(event_id=others_event).values_list("pk", flat=True))
    assert all(carries(event, user.email) for event in WebhookEvent.objects.filter(pk__in=theirs))

    response = staff_client.delete(f"/api/v1/admin/users/{user.pk}/")

    assert response.status_code == 204
    kept = WebhookEvent.objects.filter(pk__in=theirs)
    assert kept.count() == 3
    for event in kept:
        assert not carries(event, user.email) and not carries(event, PERSON), event.event_type
        assert event.raw_body == ""
    session = kept.filter(event_type="checkout.session.completed").first().payload["data"]["object"]
    assert (session["customer_details"], session["customer_email"]) == (None, None)
    assert (session["amount_total"], session["status"]) == (1900, "complete")  # the financial record stays
    fetched = kept.exclude(fetched={}).get().fetched[fetched_customer]
    assert (fetched["id"], fetched["email"], fetched["metadata"]) == (fetched_customer, None, None)
    untouched = WebhookEvent.objects.get(event_id=others_event)
    assert carries(untouched, "other@example.com") and untouched.raw_body
    assert not any(user.email in json.dumps(row.request_body) for row in AdminAuditLog.objects.all())
    audit = AdminAuditLog.objects.get(resource_type="payments.webhookevent", action=AuditAction.UPDATE)
    assert audit.new_value == {"personal_data_erased_for_user": user.pk, "events": 3}
