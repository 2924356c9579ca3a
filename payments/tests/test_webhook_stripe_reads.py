"""What a webhook asks of Stripe (reading an object the event alone does not explain, deleting an
expired checkout's coupon, stopping Stripe's retries of an invoice) is asked with no transaction of
ours open (PostgreSQL, real commits; the emulator watches for a connection left in a transaction)."""

import pytest
from rest_framework.test import APIClient

from conftest import access_token_for, bearer, role_grant
from coupons.models import CouponRedemption, RedemptionStatus
from coupons.tests.factories import CouponFactory
from payments import stripe_api
from payments.models import OperationKind, OperationState, PaymentOperation, StripeCustomer, WebhookStatus
from payments.tests.conftest import client_for, customer, stripe_subscriber
from payments.tests.helpers import deliver_event
from subscriptions.models import DunningAttempt, Subscription

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("catalog")]


def started_checkout(user, **body) -> str:
    started = client_for(user).post("/api/v1/subscriptions/", {"tier": "enterprise_pro", **body}, format="json")
    assert started.status_code == 201, started.content
    return started.json()["checkout"]["session_id"]


def test_a_checkout_naming_only_its_customer_reads_the_customer_outside_any_transaction(stripe):
    user = customer("buyer@example.com")
    stripe_customer = stripe_api.client().v1.customers.create(
        params={"email": user.email, "metadata": {"user_id": str(user.pk)}}
    )
    session = {
        "id": "cs_test_customer_only",
        "object": "checkout.session",
        "mode": "payment",
        "client_reference_id": None,
        "customer": stripe_customer.id,
        "metadata": {"kind": "license", "version": "1.0.0"},
        "amount_total": 19_900,
        "currency": "usd",
        "payment_status": "paid",
        "status": "complete",
    }

    row, _ = deliver_event("checkout.session.completed", session)

    assert row.status == WebhookStatus.PROCESSED, (row.unmatched_reason, row.error)
    assert ("GET", f"customers/{stripe_customer.id}") in stripe.calls()
    assert StripeCustomer.objects.get(user=user).stripe_customer_id == stripe_customer.id


def test_an_invoice_paid_before_its_checkout_reads_the_subscription_outside_any_transaction(stripe):
    user = customer("early@example.com")
    session = stripe.checkout_complete(started_checkout(user))
    stripe.object(session["subscription"])["metadata"] = session["metadata"]
    invoice = {**stripe.object(session["invoice"])}
    invoice["parent"] = {
        "type": "subscription_details",
        "subscription_details": {"subscription": session["subscription"], "metadata": {}},
    }

    row, _ = deliver_event("invoice.paid", invoice)

    assert row.status == WebhookStatus.PROCESSED, (row.unmatched_reason, row.error)
    assert ("GET", f"subscriptions/{session['subscription']}") in stripe.calls()
    assert Subscription.objects.get(user=user, tier="enterprise_pro").stripe_subscription_id == session["subscription"]


def test_an_expired_checkout_deletes_its_stripe_coupon_after_its_commit(stripe):
    user = customer("abandons@example.com")
    coupon = CouponFactory(discount_value="20.00")
    session = stripe.object(started_checkout(user, coupon_code=coupon.code))
    session["status"] = "expired"

    row, _ = deliver_event("checkout.session.expired", dict(session))

    assert row.status == WebhookStatus.PROCESSED
    assert stripe.objects_of("coupon") == []
    operation = PaymentOperation.objects.get(kind=OperationKind.SUBSCRIPTION_CHECKOUT)
    assert operation.state == OperationState.FAILED
    assert CouponRedemption.objects.get(coupon=coupon).status == RedemptionStatus.FAILED


def test_a_failed_renewal_stops_stripes_retries_of_its_invoice_after_its_commit(stripe):
    subscription = stripe_subscriber(stripe)
    invoice = stripe.invoice_open(
        "in_renewal_failed",
        customer=subscription.stripe_customer_id,
        amount=14_900,
        subscription=subscription.stripe_subscription_id,
    )
    invoice["auto_advance"] = True

    row, _ = deliver_event("invoice.payment_failed", dict(invoice))

    assert row.status == WebhookStatus.PROCESSED, row.error
    assert DunningAttempt.objects.filter(invoice__stripe_invoice_id="in_renewal_failed").count() == 4
    assert stripe.object("in_renewal_failed")["auto_advance"] is False


def test_staff_reprocess_an_unmatched_event_reading_stripe_outside_any_transaction(stripe, django_user_model):
    user = customer("buyer@example.com")
    session = {
        "id": "cs_test_nobody",
        "object": "checkout.session",
        "mode": "payment",
        "client_reference_id": None,
        "customer": "cus_later_linked",
        "metadata": {"kind": "license", "version": "1.0.0"},
        "amount_total": 19_900,
        "currency": "usd",
        "payment_status": "paid",
        "status": "complete",
    }
    row, _ = deliver_event("checkout.session.completed", session)
    assert row.status == WebhookStatus.UNMATCHED
    stripe.state.objects["cus_later_linked"] = {
        "id": "cus_later_linked",
        "object": "customer",
        "metadata": {"user_id": str(user.pk)},
    }
    staff = role_grant(
        django_user_model.objects.create_user(
            username="finance@example.com", email="finance@example.com", password="x" * 20, is_staff=True
        ),
        "finance",
    )
    client = APIClient()
    client.credentials(**bearer(access_token_for(staff)))

    response = client.post(f"/api/v1/admin/payments/unmatched/{row.event_id}/reprocess/")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == WebhookStatus.PROCESSED
    assert StripeCustomer.objects.get(user=user).stripe_customer_id == "cus_later_linked"
