"""Refunds and disputes, through the signed webhook endpoint, with the objects of the pinned Stripe API
version: licenses and subscriptions bought on the emulator, then Stripe's charge, refund and dispute
events about their payments."""

import time

import pytest
import stripe as stripe_sdk
from django.db import transaction
from django.db.models import Sum
from rest_framework.test import APIClient

from audit.models import AdminAuditLog
from billing_project.service_tokens import service_token_issue
from conftest import access_token_for, bearer, role_grant, run_concurrently
from credits.models import CreditDeductionLedger, UserCreditBalance, UserCreditSource
from credits.services import pricing_catalog_seed
from credits.tests.conftest import usage_event
from licensing import versions
from licensing.models import LicenseStatus
from payments.models import Payment, PaymentEvent, WebhookEvent
from payments.tests import stripe_objects
from payments.tests.conftest import client_for, customer
from payments.tests.webhook_flows import charge_of, disputed, license_bought, post_event, refunded, subscribed
from subscriptions.models import PaymentStatus, PaymentTransaction, ProrationEvent, Subscription
from subscriptions.services import subscription_transition
from subscriptions.services.lifecycle import subscription_lock

pytestmark = [pytest.mark.django_db]


def movements(payment: Payment) -> list[tuple[str, int]]:
    rows = PaymentEvent.objects.filter(metadata__payment_id=str(payment.pk)).order_by("created_at")
    return [(row.event_type, row.amount) for row in rows]


def gateway(user) -> APIClient:
    pricing_catalog_seed()
    service = client_for(user)
    service.credentials(**bearer(service_token_issue(service="gateway", scopes=["usage:write"]).token))
    return service


def spend(user, output_tokens: int, **usage) -> None:
    response = gateway(user).post(
        "/api/v1/usage/record/", usage_event(user, output_tokens=output_tokens, **usage), format="json"
    )
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


def test_a_failed_refund_lowers_the_refunded_amount_by_its_amount_once(stripe_http, catalog, api_client):
    _, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    kept, failing = refunded(payment, 3000, 5000)["refunds"]["data"]
    post_event(api_client, "refund.created", kept)
    post_event(api_client, "refund.created", {**failing, "status": "pending"})
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (8000, "partially_refunded")

    result = post_event(api_client, "refund.failed", {**failing, "status": "failed"})
    again = post_event(api_client, "refund.updated", {**failing, "status": "canceled"})

    assert (result["result"]["action"], result["result"]["amount_refunded"]) == ("refund_failed_recorded", 3000)
    assert again["result"]["action"] == "refund_already_recorded"
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status, payment.refunds[failing["id"]]["status"]) == (
        3000,
        "partially_refunded",
        "failed",
    )
    assert movements(payment) == [("refund", 3000), ("refund", 5000), ("refund_failed", 5000)]


def test_the_only_refund_failing_puts_the_payment_back_to_succeeded(stripe_http, catalog, api_client):
    _, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    refund = refunded(payment, 5000)["refunds"]["data"][0]
    post_event(api_client, "refund.created", {**refund, "status": "pending"})

    post_event(api_client, "refund.failed", {**refund, "status": "failed"})

    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (0, "succeeded")


def test_a_charge_total_reported_before_a_refund_failed_does_not_count_it_again(stripe_http, catalog, api_client):
    _, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    now = int(time.time())
    charge = refunded(payment, 5000, status="pending")
    refund = charge["refunds"]["data"][0]
    post_event(api_client, "refund.failed", {**refund, "status": "failed"}, created=now)

    late = post_event(api_client, "charge.refunded", charge, created=now - 60)

    assert late["result"]["action"] == "refund_already_recorded"
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (0, "succeeded")


def test_a_refund_first_seen_failed_lowers_what_the_charge_total_had_counted(stripe_http, catalog, api_client):
    _, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    now = int(time.time())
    charge = refunded(payment, 5000)
    refund = charge["refunds"]["data"][0]
    post_event(api_client, "charge.refunded", {**charge, "refunds": None}, created=now - 60)  # not expanded

    post_event(api_client, "refund.failed", {**refund, "status": "failed"}, created=now)

    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (0, "succeeded")
    assert movements(payment) == [("refund", 5000), ("refund_failed", 5000)]


def test_a_refund_never_counted_that_fails_leaves_the_refunds_counted_by_their_ids(stripe_http, catalog, api_client):
    _, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    kept, never_counted = refunded(payment, 5000, 3000)["refunds"]["data"]
    post_event(api_client, "refund.created", kept)

    result = post_event(api_client, "refund.failed", {**never_counted, "status": "failed"})

    assert result["result"]["action"] == "refund_failed_recorded"
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (5000, "partially_refunded")
    assert movements(payment) == [("refund", 5000), ("refund_failed", 3000)]


def test_a_full_refund_that_fails_afterwards_lowers_the_amount_and_leaves_the_license_revoked(
    stripe_http, catalog, api_client
):
    license_, payment = license_bought(stripe_http, api_client, "buyer@example.com")
    charge = refunded(payment, 19900)
    post_event(api_client, "charge.refunded", charge)

    result = post_event(api_client, "refund.failed", {**charge["refunds"]["data"][0], "status": "failed"})

    assert (result["result"]["status"], result["result"]["effect"]) == ("succeeded", None)
    payment.refresh_from_db()
    license_.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (0, "succeeded")
    assert license_.status == LicenseStatus.REVOKED  # never granted back by itself: left to staff
    audit = AdminAuditLog.objects.filter(resource_type="payments.payment", resource_id=str(payment.pk)).latest(
        "created_at"
    )
    assert (audit.previous_value["amount_refunded"], audit.new_value["amount_refunded"]) == (19900, 0)


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


def license_upgraded(stripe_http, api_client, email: str, settings):
    """A license bought for 1.0.0, then upgraded to the 2.x line once 2.0.0 is on sale, both paid
    through Stripe Checkout."""
    license_, _ = license_bought(stripe_http, api_client, email)
    settings.LICENSE_CURRENT_VERSION = "2.0.0"
    started = client_for(license_.user).post(
        "/api/v1/licenses/upgrade/", {"license_key": license_.license_key}, format="json"
    )
    assert started.status_code == 201, started.content
    session = stripe_http.checkout_complete(started.json()["checkout"]["session_id"])
    assert post_event(api_client, "checkout.session.completed", session)["status"] == "processed"
    return license_, Payment.objects.get(stripe_checkout_session_id=session["id"])


def test_a_full_refund_of_a_license_upgrade_takes_the_license_back_to_its_previous_line(
    stripe_http, catalog, api_client, settings
):
    license_, payment = license_upgraded(stripe_http, api_client, "buyer@example.com", settings)
    license_.refresh_from_db()
    upgrade = license_.upgrades.get()
    before = license_.eligible_until_version
    assert (payment.kind, payment.object_id) == ("license_upgrade_checkout", str(upgrade.pk))

    partial = post_event(api_client, "charge.refunded", refunded(payment, 1000))
    license_.refresh_from_db()
    assert (partial["result"]["effect"], license_.eligible_until_version) == (None, before)

    full = post_event(api_client, "charge.refunded", refunded(payment, 1000, payment.amount - 1000))

    license_.refresh_from_db()
    upgrade.refresh_from_db()
    previous_line = versions.eligible_until_for(upgrade.from_version)
    assert full["result"]["effect"] == {
        "upgrade_id": str(upgrade.pk),
        "license_id": str(license_.pk),
        "reverted": True,
        "eligible_until_version": previous_line,
    }
    assert (license_.status, license_.eligible_until_version, upgrade.status) == (
        LicenseStatus.ACTIVE,
        previous_line,
        "refunded",
    )
    assert (before, previous_line) == ("2.999.999", "1.999.999")
    assert AdminAuditLog.objects.filter(
        resource_type="licensing.perpetuallicense", new_value__upgrade_id=str(upgrade.pk)
    ).exists()


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


def test_a_full_refund_leaves_the_credits_a_live_hold_reserves_to_the_request_in_flight(
    stripe_http, catalog, api_client
):
    # given a subscriber with a streaming call in flight holding part of the period's credits
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com")
    user = subscription.user
    unspent = period_grant(subscription).remaining
    other_credits = UserCreditBalance.objects.get(user=user).amount - unspent  # the free tier's, spent first
    assert 0 < other_credits < 40_000, other_credits
    reserved = gateway(user).post(
        "/api/v1/usage/reserve/", {"user_id": user.pk, "estimated_credits": 40_000}, format="json"
    )
    assert reserved.status_code == 201, reserved.content

    # when the period's payment is refunded in full
    result = post_event(api_client, "charge.refunded", refunded(payment, payment.amount))

    # then what is neither spent nor held goes back (the hold is covered by the other credits first)
    assert result["result"]["effect"]["credits_clawed_back"] == unspent - (40_000 - other_credits)
    assert period_grant(subscription).remaining == 40_000 - other_credits
    checked = gateway(user).post("/api/v1/usage/check/", {"user_id": user.pk, "estimated_credits": 1}, format="json")
    free_tier_credits = checked.json()["balance"] - 40_000  # the free tier the user is back on
    assert checked.json()["available"] == free_tier_credits >= 0
    # and the call in flight is still charged from its hold, never below zero
    spend(user, output_tokens=100_000, hold_id=reserved.json()["hold_id"])
    balance = UserCreditBalance.objects.get(user=user).amount
    assert 0 <= balance < 40_000 + free_tier_credits


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


def test_a_failed_refund_of_a_subscription_lowers_the_invoice_payment_too(stripe_http, catalog, api_client):
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com")
    charge = refunded(payment, 4900)
    post_event(api_client, "charge.refunded", charge)

    post_event(api_client, "refund.failed", {**charge["refunds"]["data"][0], "status": "failed"})

    payment.refresh_from_db()
    subscription.refresh_from_db()
    assert (payment.amount_refunded, payment.status, subscription.status) == (0, "succeeded", "active")
    transaction_row = PaymentTransaction.objects.get(invoice__stripe_invoice_id=payment.stripe_invoice_id)
    assert (transaction_row.status, transaction_row.refunded_amount, str(transaction_row.refunded_amount_usd)) == (
        PaymentStatus.SUCCEEDED,
        0,
        "0.00",
    )


def test_a_staff_refund_is_recorded_on_the_money_received_and_stripes_event_about_it_moves_nothing(
    stripe_http, catalog, api_client, django_user_model
):
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com")
    transaction_row = PaymentTransaction.objects.get(invoice__stripe_invoice_id=payment.stripe_invoice_id)
    staff = role_grant(
        django_user_model.objects.create_user(username="finance@example.com", password="x", is_staff=True), "finance"
    )
    staff_client = APIClient()
    staff_client.credentials(**bearer(access_token_for(staff)))

    answer = staff_client.post(
        f"/api/v1/admin/payments/{transaction_row.pk}/refund/",
        {"amount_usd": "49.00", "reason": "Goodwill"},
        format="json",
    )

    assert answer.status_code == 200, answer.content
    assert answer.json()["state"] == "succeeded", answer.content
    (refund,) = stripe_http.objects_of("refund")
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status, list(payment.refunds)) == (
        4900,
        "partially_refunded",
        [refund["id"]],
    )
    later = post_event(api_client, "refund.created", {**refund, "charge": charge_of(payment)})
    assert later["result"]["action"] == "refund_already_recorded"
    assert movements(payment) == [("refund", 4900)]
    transaction_row.refresh_from_db()
    assert (transaction_row.refunded_amount, transaction_row.status) == (4900, PaymentStatus.PARTIALLY_REFUNDED)


def upgraded(stripe_http, api_client, email: str) -> tuple[Subscription, Payment]:
    """Enterprise Pro bought through Checkout, then upgraded to Enterprise Max: the prorated charge paid."""
    subscription, _ = subscribed(stripe_http, api_client, email)
    changed = client_for(subscription.user).post(
        f"/api/v1/subscriptions/{subscription.pk}/change-tier/", {"tier": "enterprise_max"}, format="json"
    )
    assert changed.status_code == 200, changed.content
    subscription.refresh_from_db()
    assert subscription.tier == "enterprise_max"
    return subscription, Payment.objects.get(kind="upgrade_charge", user=subscription.user)


def proration_grant(subscription: Subscription) -> UserCreditSource:
    return UserCreditSource.objects.get(
        allocation__subscription_id=subscription.pk, allocation__source="proration", user=subscription.user
    )


def test_a_full_refund_of_an_upgrade_charge_puts_the_earlier_tier_back_and_claws_back_its_credits(
    stripe_http, catalog, api_client
):
    # given an upgrade whose prorated credits are partly spent
    subscription, payment = upgraded(stripe_http, api_client, "payer@example.com")
    event = ProrationEvent.objects.get(subscription=subscription)
    spend(subscription.user, output_tokens=300_000)
    prorated_left = proration_grant(subscription).remaining
    period_left = period_grant(subscription).remaining
    assert 0 < prorated_left <= event.credits_adjustment

    # when Stripe refunds the upgrade's charge in full
    result = post_event(api_client, "charge.refunded", refunded(payment, payment.amount))

    # then the subscription is back on Enterprise Pro, its period's access intact, the prorated credits gone
    assert result["result"]["effect"] == {
        "proration_event_id": str(event.pk),
        "subscription_id": str(subscription.pk),
        "reverted": True,
        "tier": "enterprise_pro",
        "credits_clawed_back": prorated_left,
    }
    subscription.refresh_from_db()
    event.refresh_from_db()
    assert (subscription.status, subscription.tier, str(subscription.base_price_usd)) == (
        "active",
        "enterprise_pro",
        "149.00",
    )
    assert subscription.user.entitlement.tier == "enterprise_pro"
    assert event.status == "reversed"
    assert (proration_grant(subscription).remaining, period_grant(subscription).remaining) == (0, period_left)
    transaction_row = PaymentTransaction.objects.get(invoice__stripe_invoice_id=payment.stripe_invoice_id)
    assert (transaction_row.status, transaction_row.refunded_amount) == (PaymentStatus.REFUNDED, payment.amount)
    assert AdminAuditLog.objects.filter(
        resource_type="subscriptions.subscription",
        resource_id=str(subscription.pk),
        new_value__proration_event_id=str(event.pk),
        new_value__tier="enterprise_pro",
    ).exists()


def test_a_dispute_of_an_upgrade_charge_suspends_nothing_and_lost_undoes_the_upgrade(stripe_http, catalog, api_client):
    subscription, payment = upgraded(stripe_http, api_client, "payer@example.com")

    opened = post_event(api_client, "charge.dispute.created", disputed(payment, "needs_response"))
    subscription.refresh_from_db()
    assert (opened["result"]["effect"]["suspended"], subscription.status) == (False, "active")

    lost = post_event(api_client, "charge.dispute.closed", disputed(payment, "lost"))

    subscription.refresh_from_db()
    assert (lost["result"]["effect"]["reverted"], subscription.status, subscription.tier) == (
        True,
        "active",
        "enterprise_pro",
    )


def test_a_refunded_upgrade_is_only_recorded_once_another_change_followed_it(stripe_http, catalog, api_client):
    subscription, payment = upgraded(stripe_http, api_client, "payer@example.com")
    Subscription.objects.filter(pk=subscription.pk).update(tier="enterprise_pro")  # a later change

    result = post_event(api_client, "charge.refunded", refunded(payment, payment.amount))

    assert (result["result"]["effect"]["reverted"], result["result"]["status"]) == (False, "refunded")
    assert ProrationEvent.objects.get(subscription=subscription).status == "applied"
    assert proration_grant(subscription).remaining > 0


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


def test_a_won_dispute_leaves_a_subscription_suspended_for_another_reason_suspended(stripe_http, catalog, api_client):
    subscription, payment = subscribed(stripe_http, api_client, "payer@example.com")
    post_event(api_client, "charge.dispute.created", disputed(payment, "needs_response"))
    with transaction.atomic():
        locked = subscription_lock(subscription.pk)
        subscription_transition(subscription=locked, status="active", reason="Paid by other means")
        subscription_transition(subscription=locked, status="past_due", reason="The renewal failed")
        subscription_transition(subscription=locked, status="suspended", reason="Grace period ended unpaid")

    closed = post_event(api_client, "charge.dispute.closed", disputed(payment, "won"))

    assert closed["result"]["effect"]["restored"] is False
    assert Subscription.objects.get(pk=subscription.pk).status == "suspended"


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
