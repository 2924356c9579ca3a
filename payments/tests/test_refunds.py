"""Refunds and disputes, through the signed webhook endpoint, with the objects of the pinned Stripe API
version: licenses and subscriptions bought on the emulator, then Stripe's charge, refund and dispute
events about their payments."""

import time

import pytest
import stripe as stripe_sdk
from django.db.models import Sum
from rest_framework.test import APIClient

from audit.models import AdminAuditLog
from billing_project.service_tokens import service_token_issue
from conftest import bearer, run_concurrently
from credits.models import CreditDeductionLedger, UserCreditBalance, UserCreditSource
from credits.services import pricing_catalog_seed
from credits.tests.conftest import usage_event
from licensing.models import LicenseStatus
from payments.models import Payment, PaymentEvent, WebhookEvent
from payments.tests import stripe_objects
from payments.tests.conftest import client_for, customer
from payments.tests.webhook_flows import charge_of, disputed, license_bought, post_event, refunded, subscribed
from subscriptions.models import PaymentStatus, PaymentTransaction, Subscription

pytestmark = [pytest.mark.django_db]


def movements(payment: Payment) -> list[tuple[str, int]]:
    rows = PaymentEvent.objects.filter(metadata__payment_id=str(payment.pk)).order_by("created_at")
    return [(row.event_type, row.amount) for row in rows]


def spend(user, output_tokens: int) -> None:
    pricing_catalog_seed()
    service = client_for(user)
    service.credentials(**bearer(service_token_issue(service="gateway", scopes=["usage:write"]).token))
    response = service.post("/api/v1/usage/record/", usage_event(user, output_tokens=output_tokens), format="json")
    assert response.status_code == 201, response.content


def period_grant(subscription: Subscription) -> UserCreditSource:
    return UserCreditSource.objects.get(
        allocation__subscription_id=subscription.pk, allocation__source="subscription", user=subscription.user
    )


# The shapes used here are the pinned API version's


def test_the_objects_sent_carry_only_fields_of_the_pinned_api_version():
    samples = {
        stripe_sdk.Charge: stripe_objects.charge(charge_id="ch_1", payment_intent="pi_1", amount=1, currency="usd"),
        stripe_sdk.Refund: stripe_objects.refund(charge="ch_1", payment_intent="pi_1", amount=1, currency="usd"),
        stripe_sdk.Dispute: stripe_objects.dispute(
            dispute_id="dp_1", charge="ch_1", payment_intent="pi_1", amount=1, currency="usd", status="lost"
        ),
        stripe_sdk.InvoicePayment: stripe_objects.invoice_payment(
            invoice="in_1", payment_intent="pi_1", amount=1, currency="usd"
        ),
    }
    for definition, sample in samples.items():
        assert set(sample) <= set(definition.__annotations__), definition.__name__
    assert "payment_intent" not in stripe_sdk.Invoice.__annotations__  # why invoices are matched through payments


# Licenses


def test_a_full_refund_of_a_license_revokes_it(stripe_http, catalog, api_client):
    license_, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    assert (payment.kind, payment.object_id, payment.amount) == ("license_checkout", str(license_.pk), 19900)

    result = post_event(api_client, "charge.refunded", refunded(payment, 19900))

    assert result["status"] == "processed"
    assert result["result"]["effect"] == {"license_id": str(license_.pk), "revoked": True}
    license_.refresh_from_db()
    payment.refresh_from_db()
    assert license_.status == LicenseStatus.REVOKED
    assert (payment.status, payment.amount_refunded, payment.stripe_charge_id) == (
        "refunded",
        19900,
        charge_of(payment),
    )
    assert movements(payment) == [("refund", 19900)]
    assert AdminAuditLog.objects.filter(resource_type="payments.payment", resource_id=str(payment.pk)).exists()


def test_a_partial_refund_of_a_license_is_recorded_and_the_license_stays_active(stripe_http, catalog, api_client):
    license_, payment = license_bought(stripe_http, api_client, "buyer@example.com")

    result = post_event(api_client, "charge.refunded", refunded(payment, 5000))

    assert (result["result"]["action"], result["result"]["effect"]) == ("refund_recorded", None)
    license_.refresh_from_db()
    payment.refresh_from_db()
    assert license_.status == LicenseStatus.ACTIVE
    assert (payment.status, payment.amount_refunded) == ("partially_refunded", 5000)
    assert movements(payment) == [("refund", 5000)]


def test_refund_events_count_each_refund_once_whichever_arrives_first(stripe_http, catalog, api_client):
    license_, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    charge = refunded(payment, 5000)
    refund = charge["refunds"]["data"][0]

    first = post_event(api_client, "refund.created", refund)
    second = post_event(api_client, "charge.refunded", charge)
    rest = stripe_objects.refund(
        charge=charge["id"], payment_intent=payment.stripe_payment_intent_id, amount=14900, currency="usd"
    )
    last = post_event(api_client, "refund.updated", rest)

    assert [first["result"]["action"], second["result"]["action"], last["result"]["action"]] == [
        "refund_recorded",
        "refund_already_recorded",
        "refund_recorded",
    ]
    payment.refresh_from_db()
    license_.refresh_from_db()
    assert (payment.status, payment.amount_refunded, license_.status) == ("refunded", 19900, LicenseStatus.REVOKED)
    assert movements(payment) == [("refund", 5000), ("refund", 14900)]


def test_a_failed_refund_is_recorded_without_lowering_the_refunded_amount(stripe_http, catalog, api_client):
    _, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    refund = refunded(payment, 5000)["refunds"]["data"][0]
    post_event(api_client, "refund.created", {**refund, "status": "pending"})

    result = post_event(api_client, "refund.failed", {**refund, "status": "failed"})

    assert result["result"]["action"] == "refund_failed_recorded"
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.refunds[refund["id"]]["status"]) == (5000, "failed")
    assert movements(payment) == [("refund", 5000), ("refund_failed", 5000)]


def test_an_older_partial_refund_after_the_full_one_changes_nothing(stripe_http, catalog, api_client):
    license_, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    now = int(time.time())
    partial, full = refunded(payment, 5000), refunded(payment, 5000, 14900)
    post_event(api_client, "charge.refunded", full, created=now)

    late = post_event(api_client, "charge.refunded", partial, created=now - 60)

    assert late["result"]["action"] == "stale_event_skipped"  # the charge has a newer event applied
    payment.refresh_from_db()
    license_.refresh_from_db()
    assert (payment.status, payment.amount_refunded, license_.status) == ("refunded", 19900, LicenseStatus.REVOKED)
    assert movements(payment) == [("refund", 19900)]


def test_a_dispute_suspends_a_license_and_winning_it_restores_the_license(stripe_http, catalog, api_client):
    license_, payment = license_bought(stripe_http, api_client, "buyer@example.com")

    opened = post_event(api_client, "charge.dispute.created", disputed(payment, "needs_response"))
    license_.refresh_from_db()
    assert (opened["result"]["dispute_status"], license_.status) == ("open", LicenseStatus.SUSPENDED)

    won = post_event(api_client, "charge.dispute.closed", disputed(payment, "won"))

    license_.refresh_from_db()
    payment.refresh_from_db()
    assert (won["result"]["effect"]["restored"], license_.status) == (True, LicenseStatus.ACTIVE)
    assert (payment.dispute_status, payment.status) == ("won", "succeeded")
    assert movements(payment) == [("dispute_open", 19900), ("dispute_won", 19900)]


def test_a_lost_dispute_revokes_the_license_and_a_late_dispute_created_changes_nothing(
    stripe_http, catalog, api_client
):
    license_, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    post_event(api_client, "charge.dispute.created", disputed(payment, "needs_response"))
    post_event(api_client, "charge.dispute.closed", disputed(payment, "lost"))

    late = post_event(api_client, "charge.dispute.created", disputed(payment, "needs_response"))

    assert late["result"]["action"] == "dispute_already_recorded"
    license_.refresh_from_db()
    payment.refresh_from_db()
    assert (license_.status, payment.dispute_status) == (LicenseStatus.REVOKED, "lost")


def test_a_refund_of_an_unknown_charge_is_acknowledged_as_unmatched_and_changes_nothing(
    stripe_http, catalog, api_client
):
    charge = stripe_objects.charge(charge_id="ch_unknown", payment_intent="pi_unknown", amount=1900, currency="usd")

    result = post_event(api_client, "charge.refunded", charge)

    assert result["status"] == "unmatched"
    assert result["result"]["reason"] == "No payment here for charge ch_unknown (charge.refunded)."
    assert (Payment.objects.count(), PaymentEvent.objects.filter(event_type="refund").count()) == (0, 0)
    assert WebhookEvent.objects.get(event_type="charge.refunded").status == "unmatched"


# Subscriptions


def test_a_full_refund_of_a_subscription_period_ends_access_and_claws_back_its_unspent_credits(
    stripe_http, catalog, api_client
):
    # given a subscriber who spent part of the period's credits
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com")
    assert payment.stripe_payment_intent_id  # learnt from the invoice's InvoicePayment
    spend(subscription.user, output_tokens=300_000)
    unspent = period_grant(subscription).remaining
    balance_before = UserCreditBalance.objects.get(user=subscription.user).amount
    assert 0 < unspent < 250_000

    # when Stripe refunds the period's payment in full
    result = post_event(api_client, "charge.refunded", refunded(payment, payment.amount))

    # then the paid access ends, the unspent credits go back, spent ones stay spent
    assert result["result"]["effect"] == {
        "subscription_id": str(subscription.pk),
        "access_ended": True,
        "credits_clawed_back": unspent,
    }
    subscription.refresh_from_db()
    assert subscription.status == "cancelled"
    assert Subscription.objects.get(user=subscription.user, status="active").tier == "free"
    assert period_grant(subscription).remaining == 0
    clawback = CreditDeductionLedger.objects.get(user=subscription.user, reason="admin_adjustment")
    assert (clawback.amount, clawback.balance_before, clawback.balance_after) == (
        unspent,
        balance_before,
        balance_before - unspent,
    )
    transaction_row = PaymentTransaction.objects.get(invoice__stripe_invoice_id=payment.stripe_invoice_id)
    assert (transaction_row.status, transaction_row.refunded_amount) == (PaymentStatus.REFUNDED, payment.amount)
    assert movements(payment) == [("refund", payment.amount)]


def test_a_partial_refund_of_a_subscription_is_recorded_and_access_stays(stripe_http, catalog, api_client):
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com")
    balance_before = UserCreditBalance.objects.get(user=subscription.user).amount

    post_event(api_client, "charge.refunded", refunded(payment, 4900))

    subscription.refresh_from_db()
    payment.refresh_from_db()
    assert (subscription.status, payment.status, payment.amount_refunded) == ("active", "partially_refunded", 4900)
    assert UserCreditBalance.objects.get(user=subscription.user).amount == balance_before
    transaction_row = PaymentTransaction.objects.get(invoice__stripe_invoice_id=payment.stripe_invoice_id)
    assert (transaction_row.status, transaction_row.refunded_amount, str(transaction_row.refunded_amount_usd)) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        4900,
        "49.00",
    )


def test_a_refund_is_matched_through_the_invoice_payment_event_when_the_invoice_names_no_payment(
    stripe_http, catalog, api_client
):
    # given an invoice.paid that arrives without its payments (not expanded)
    user = customer("payer@example.com")
    started = client_for(user).post("/api/v1/subscriptions/", {"tier": "enterprise_pro"}, format="json")
    session = stripe_http.checkout_complete(started.json()["checkout"]["session_id"])
    post_event(api_client, "checkout.session.completed", session)
    invoice = {**stripe_http.object(session["invoice"]), "payments": None}
    post_event(api_client, "invoice.paid", invoice)
    payment = Payment.objects.get(stripe_invoice_id=invoice["id"])
    assert payment.stripe_payment_intent_id == ""
    intent = stripe_http.object(session["invoice"])["payments"]["data"][0]["payment"]["payment_intent"]

    linked = post_event(
        api_client,
        "invoice_payment.paid",
        stripe_objects.invoice_payment(invoice=invoice["id"], payment_intent=intent, amount=14900, currency="usd"),
    )
    payment.refresh_from_db()
    result = post_event(api_client, "charge.refunded", refunded(payment, 14900))

    assert linked["result"]["action"] == "payment_linked"
    assert (result["result"]["status"], result["result"]["effect"]["access_ended"]) == ("refunded", True)


def test_a_disputed_subscription_is_suspended_then_restored_when_the_dispute_is_won(stripe_http, catalog, api_client):
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com")

    opened = post_event(api_client, "charge.dispute.created", disputed(payment, "needs_response"))
    subscription.refresh_from_db()
    assert subscription.status == "suspended", opened["result"]["effect"]

    post_event(api_client, "charge.dispute.closed", disputed(payment, "won"))

    subscription.refresh_from_db()
    assert subscription.status == "active"
    assert subscription.user.entitlement.tier == "enterprise_pro"


def test_a_prevented_dispute_suspends_nothing_and_moves_no_money(stripe_http, catalog, api_client):
    # given: a license and a subscription suspended for another reason (its grace period ended unpaid)
    license_, license_payment = license_bought(stripe_http, api_client, "buyer@example.com")
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com")
    Subscription.objects.filter(pk=subscription.pk).update(status="suspended")

    # when: the card network stopped each chargeback before it was filed
    prevented = post_event(api_client, "charge.dispute.created", disputed(license_payment, "prevented"))
    post_event(api_client, "charge.dispute.closed", disputed(payment, "prevented", "dp_0002"))

    # then: recorded as closed in our favour; the license stays active, the subscription stays suspended
    license_.refresh_from_db()
    license_payment.refresh_from_db()
    assert (prevented["result"]["dispute_status"], prevented["result"]["effect"]) == ("won", None)
    assert (license_.status, license_payment.dispute_status, license_payment.status) == ("active", "won", "succeeded")
    assert Subscription.objects.get(pk=subscription.pk).status == "suspended"
    assert movements(license_payment) == movements(payment) == []


def test_a_dispute_prevented_after_it_opened_restores_the_access_as_a_won_one(stripe_http, catalog, api_client):
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com")
    post_event(api_client, "charge.dispute.created", disputed(payment, "warning_needs_response"))
    assert Subscription.objects.get(pk=subscription.pk).status == "suspended"

    closed = post_event(api_client, "charge.dispute.closed", disputed(payment, "prevented"))

    assert closed["result"]["effect"]["restored"] is True
    assert Subscription.objects.get(pk=subscription.pk).status == "active"
    assert movements(payment) == [("dispute_open", payment.amount), ("dispute_won", payment.amount)]


def test_a_lost_dispute_of_a_subscription_is_a_full_refund(stripe_http, catalog, api_client):
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com")
    post_event(api_client, "charge.dispute.created", disputed(payment, "needs_response"))

    lost = post_event(api_client, "charge.dispute.closed", disputed(payment, "lost"))

    subscription.refresh_from_db()
    assert subscription.status == "cancelled"
    assert lost["result"]["effect"]["credits_clawed_back"] == 250_000
    assert period_grant(subscription).remaining == 0
    # a refund Stripe reports afterwards moves the amount, and does not end the access twice
    later = post_event(api_client, "charge.refunded", refunded(payment, payment.amount))
    assert later["result"]["effect"] is None
    assert (
        CreditDeductionLedger.objects.filter(user=subscription.user, reason="admin_adjustment").aggregate(
            total=Sum("amount")
        )["total"]
        == 250_000
    )


# Concurrent deliveries (PostgreSQL: the payment row is the lock)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_events_about_one_full_refund_move_the_money_once(stripe_http, catalog):
    license_, payment = license_bought(stripe_http, APIClient(), "buyer@example.com")
    charge = refunded(payment, payment.amount)
    events = [
        ("charge.refunded", charge),
        ("refund.created", charge["refunds"]["data"][0]),
        ("charge.refunded", charge),
        ("refund.updated", charge["refunds"]["data"][0]),
    ]

    results = run_concurrently(lambda event: post_event(APIClient(), *event), events)

    assert all(not isinstance(result, Exception) for result in results), results
    assert sorted(result["result"]["action"] for result in results) == ["refund_already_recorded"] * 3 + [
        "refund_recorded"
    ]
    license_.refresh_from_db()
    payment.refresh_from_db()
    assert (license_.status, payment.status, payment.amount_refunded) == ("revoked", "refunded", payment.amount)
    assert movements(payment) == [("refund", payment.amount)]
