"""Stripe events for the webhook tests: the real-shaped events in fixtures/stripe/ (one file per event
type), made fresh per test with their own ids and times, signed with the stripe SDK and posted to
the endpoint as Stripe posts them."""

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from payments.tests.stripe_emulator import signature_header
from subscriptions.models import Subscription
from subscriptions.services import account_register, tier_catalog_seed

STRIPE_FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
WEBHOOK_URL = "/api/v1/billing/webhooks/stripe/"
MONTH = timedelta(days=30)
PASSWORD = "correct horse battery staple"

# The ids the fixture files use: an event made from a file has each replaced wherever it appears.
SAMPLE_IDS = {
    "customer": "cus_QhSample0001",
    "subscription": "sub_1PqSample0001",
    "invoice": "in_1PqSample0001",
    "payment_intent": "pi_3PqSample0001",
    "charge": "ch_3PqSample0001",
    "session": "cs_test_a1Sample0001",
}


@dataclass(frozen=True)
class StripeIds:
    """The Stripe ids of one customer's subscription and of its current invoice."""

    customer: str
    subscription: str
    invoice: str
    payment_intent: str
    charge: str
    session: str

    @classmethod
    def new(cls) -> "StripeIds":
        tag = uuid.uuid4().hex[:16]
        return cls(
            customer=f"cus_{tag}",
            subscription=f"sub_{tag}",
            invoice=f"in_{tag}",
            payment_intent=f"pi_{tag}",
            charge=f"ch_{tag}",
            session=f"cs_test_{tag}",
        )

    def next_invoice(self) -> "StripeIds":
        """The same subscription's next invoice, with its own payment."""
        tag = uuid.uuid4().hex[:16]
        return replace(self, invoice=f"in_{tag}", payment_intent=f"pi_{tag}", charge=f"ch_{tag}")


@cache
def _fixture_text(name: str) -> str:
    return (STRIPE_FIXTURES / f"{name}.json").read_text()


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def stripe_event(
    name: str,
    ids: StripeIds,
    *,
    event_type: str | None = None,
    created: datetime | None = None,
    period: tuple[datetime, datetime] | None = None,
    **fields,
) -> dict:
    """The fixture `name` as a new event: a fresh event id, `ids` in place of the sample's, created
    at `created` (now), the invoice line's or subscription's `period`, then `fields` set on the object."""
    text = _fixture_text(name)
    for key, sample in SAMPLE_IDS.items():
        text = text.replace(sample, getattr(ids, key))
    event = json.loads(text)
    event["id"] = f"evt_{uuid.uuid4().hex}"
    event["type"] = event_type or event["type"]
    event["created"] = _seconds(created or timezone.now())
    data_object = event["data"]["object"]
    if period is not None:
        start, end = map(_seconds, period)
        if data_object["object"] == "invoice":
            data_object["lines"]["data"][0]["period"] = {"start": start, "end": end}
            # Stripe's invoice-level period of a renewal is the period that just ended.
            data_object["period_start"], data_object["period_end"] = start - (end - start), start
        else:  # a subscription's periods are its items' since Stripe's 2025 API versions
            for item in data_object["items"]["data"]:
                item["current_period_start"], item["current_period_end"] = start, end
    data_object.update(fields)
    return event


def deliver(client: APIClient, event: dict, **signing):
    """Posts `event` as Stripe does: its raw JSON body with the Stripe-Signature header
    (`signing`: signature_header's secret and timestamp)."""
    payload = json.dumps(event)
    return client.post(
        WEBHOOK_URL,
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature_header(payload, **signing),
    )


def customer_register(email: str):
    """A user as the API registers one: on the free tier with its 2,000 credits."""
    return account_register(email=email, password=PASSWORD)


def checkout_completed_event(user, ids: StripeIds, *, tier="pro", billing_cycle="monthly", amount_cents=1900) -> dict:
    return stripe_event(
        "checkout.session.completed",
        ids,
        client_reference_id=str(user.pk),
        metadata={"kind": "subscription", "tier": tier, "billing_cycle": billing_cycle},
        amount_subtotal=amount_cents,
        amount_total=amount_cents,
        customer_email=user.email,
    )


def subscribe_through_checkout(client: APIClient, user, ids: StripeIds, **checkout) -> Subscription:
    """The user pays a Stripe checkout for a subscription and its webhook arrives."""
    response = deliver(client, checkout_completed_event(user, ids, **checkout))
    assert response.status_code == 200, response.content
    return Subscription.objects.get(stripe_subscription_id=ids.subscription)


@pytest.fixture
def tier_catalog():
    tier_catalog_seed()


@pytest.fixture
def webhook_client() -> APIClient:
    """Stripe's side: no credentials, only the signature."""
    return APIClient()
