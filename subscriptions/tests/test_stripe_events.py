"""Every Stripe event that moves money or access, through the signed webhook endpoint, in the pinned
API version's shapes (the fixtures, with the emulator's ids where Stripe's state matters): checkouts
paid at once, by bank debit, or abandoned; invoices; Stripe-side subscription changes; customers;
events in any order; events about nothing known here; who retries a failed payment."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from audit.models import AdminAuditLog, AuditAction
from billing_project.models import Notification, OutboundEvent
from coupons.models import CouponRedemption, RedemptionStatus
from coupons.tests.factories import CouponFactory
from licensing.models import LicenseStatus, PerpetualLicense
from payments import stripe_api
from payments.models import (
    OperationKind,
    OperationState,
    PaymentEvent,
    PaymentOperation,
    StripeCustomer,
    WebhookEvent,
    WebhookStatus,
)
from payments.tests.conftest import client_for
from subscriptions.models import (
    BillingInvoice,
    DunningAttempt,
    DunningResult,
    InvoiceStatus,
    Subscription,
    SubscriptionStatus,
    UserEntitlement,
)
from subscriptions.services import dunning_run, invoice_payment_failed
from subscriptions.tests.conftest import (
    MONTH,
    StripeIds,
    customer_register,
    deliver,
    stripe_event,
    subscribe_through_checkout,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_http", "tier_catalog")]

Status = SubscriptionStatus
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
UNMATCHED_URL = "/api/v1/admin/payments/unmatched/"
# What a checkout session's events say of it, taken from the emulator's session.
SESSION_STATE = (
    "mode",
    "client_reference_id",
    "customer",
    "subscription",
    "invoice",
    "payment_intent",
    "metadata",
    "amount_subtotal",
    "amount_total",
    "currency",
    "payment_status",
    "status",
)


def session_event(event_type: str, session: dict, *, created=None, **fields) -> dict:
    """A checkout.session.* event in the pinned shape (the fixture) carrying the emulator's session."""
    ids = StripeIds(
        customer=session.get("customer") or "cus_none",
        subscription=session.get("subscription") or "sub_none",
        invoice=session.get("invoice") or "in_none",
        payment_intent=session.get("payment_intent") or "pi_none",
        charge="ch_none",
        session=session["id"],
    )
    state = {key: session.get(key) for key in SESSION_STATE}
    return stripe_event("checkout.session.completed", ids, event_type=event_type, created=created, **state | fields)


def checkout_started(user, **body) -> dict:
    """The user starts Enterprise Pro (no trial) through the API: the emulator's open session."""
    started = client_for(user).post("/api/v1/subscriptions/", {"tier": "enterprise_pro", **body}, format="json")
    assert started.status_code == 201, started.content
    return started.json()["checkout"]["session_id"]


def live_tier(user) -> str:
    return Subscription.objects.get(user=user, status__in=[Status.ACTIVE, Status.PAST_DUE, Status.TRIAL]).tier


def money_events(**filters) -> list:
    return list(PaymentEvent.objects.filter(**filters).exclude(amount=None).values_list("event_type", "amount"))


@pytest.fixture
def subscriber(webhook_client):
    user = customer_register("subscriber@example.com")
    ids = StripeIds.new()
    return user, subscribe_through_checkout(webhook_client, user, ids), ids


def renewal_event(subscription, ids, name="invoice.paid", **fields) -> dict:
    start = subscription.current_period_end
    return stripe_event(name, ids, period=(start, start + MONTH), billing_reason="subscription_cycle", **fields)


# Checkouts paid by a delayed method (bank debit)


def test_a_subscription_paid_by_bank_debit_activates_when_the_debit_succeeds(webhook_client, stripe_http):
    user = customer_register("debit@example.com")
    session_id = checkout_started(user)
    pending = stripe_http.checkout_complete(session_id, payment_status="unpaid")
    now = timezone.now()

    waiting = deliver(webhook_client, session_event("checkout.session.completed", pending, created=now - MINUTE))

    assert waiting.json()["result"]["state"] == OperationState.SUBMITTED
    assert live_tier(user) == "free"
    assert money_events(user=user) == []

    cleared = deliver(
        webhook_client,
        session_event("checkout.session.async_payment_succeeded", {**pending, "payment_status": "paid"}, created=now),
    )

    assert cleared.json()["result"]["state"] == OperationState.SUCCEEDED
    subscription = Subscription.objects.get(user=user, tier="enterprise_pro")
    assert (subscription.status, subscription.stripe_subscription_id) == (Status.ACTIVE, pending["subscription"])
    assert UserEntitlement.objects.get(user=user).tier == "enterprise_pro"
    assert money_events(user=user) == [("checkout_completed", 14_900)]
    assert PaymentEvent.objects.get(user=user).currency == "usd"

    # an older event of the same checkout, arriving last, changes nothing
    late = deliver(webhook_client, session_event("checkout.session.completed", pending, created=now - 2 * MINUTE))
    assert late.json()["result"] == {
        "action": "stale_event_skipped",
        "object_id": session_id,
        "newer_event_id": cleared.json()["event_id"],
    }
    assert Subscription.objects.get(pk=subscription.pk).status == Status.ACTIVE


def test_a_subscription_whose_bank_debit_fails_activates_nothing_and_gives_its_coupon_back(
    webhook_client, stripe_http, django_capture_on_commit_callbacks
):
    user = customer_register("debit@example.com")
    coupon = CouponFactory(discount_value=Decimal("20.00"))
    session_id = checkout_started(user, coupon_code=coupon.code)
    pending = stripe_http.checkout_complete(session_id, payment_status="unpaid")
    deliver(webhook_client, session_event("checkout.session.completed", pending))

    with django_capture_on_commit_callbacks(execute=True):
        failed = deliver(webhook_client, session_event("checkout.session.async_payment_failed", pending))

    assert (failed.status_code, failed.json()["status"]) == (200, "processed")
    operation = PaymentOperation.objects.get(kind=OperationKind.SUBSCRIPTION_CHECKOUT, user=user)
    assert (operation.state, operation.effect) == (OperationState.FAILED, "failed")
    assert live_tier(user) == "free"
    assert not Subscription.objects.filter(user=user, tier="enterprise_pro").exists()
    redemption = CouponRedemption.objects.get(coupon=coupon)
    assert redemption.status == RedemptionStatus.FAILED
    assert stripe_http.objects_of("coupon") == []  # the one-off Stripe coupon is removed after commit
    assert money_events(user=user) == []


def test_a_license_paid_by_bank_debit_activates_when_the_debit_succeeds(webhook_client, stripe_http):
    user = customer_register("debit@example.com")
    bought = client_for(user).post("/api/v1/licenses/purchase/", {}, format="json")
    assert bought.status_code == 201, bought.content
    license_ = PerpetualLicense.objects.get(user=user)
    pending = stripe_http.checkout_complete(bought.json()["checkout"]["session_id"], payment_status="unpaid")

    deliver(webhook_client, session_event("checkout.session.completed", pending))
    license_.refresh_from_db()
    assert license_.status == LicenseStatus.PENDING

    deliver(
        webhook_client, session_event("checkout.session.async_payment_succeeded", {**pending, "payment_status": "paid"})
    )

    license_.refresh_from_db()
    assert (license_.status, license_.checkout_session_id) == (LicenseStatus.ACTIVE, pending["id"])
    assert money_events(user=user) == [("checkout_completed", 19_900)]


def first_invoice_paid_naming_its_subscription_only(stripe_http, user) -> tuple[dict, dict]:
    """A paid checkout of the user's, completed at Stripe, and its first invoice.paid, which names its
    subscription only (Stripe's subscription carries the checkout's metadata): the session and the event."""
    session = stripe_http.checkout_complete(checkout_started(user))
    stripe_http.object(session["subscription"])["metadata"] = session["metadata"]  # subscription_data.metadata
    ids = StripeIds(
        session["customer"], session["subscription"], session["invoice"], "pi_none", "ch_none", session["id"]
    )
    start = timezone.now()
    invoice_paid = stripe_event(
        "invoice.paid", ids, period=(start, start + MONTH), billing_reason="subscription_create"
    )
    invoice_paid["data"]["object"]["parent"]["subscription_details"]["metadata"] = {}
    return session, invoice_paid


def test_a_first_invoice_paid_before_its_checkout_event_settles_the_checkout_read_from_stripe(
    webhook_client, stripe_http
):
    # given: a paid checkout whose invoice.paid arrives first, and names its subscription only
    user = customer_register("early@example.com")
    session, invoice_paid = first_invoice_paid_naming_its_subscription_only(stripe_http, user)
    session_id = session["id"]
    invoice_paid["data"]["object"]["amount_paid"] = 14_900

    response = deliver(webhook_client, invoice_paid)

    # then: Stripe's subscription names the checkout, which is settled: the subscription exists once
    assert response.json()["result"]["state"] == OperationState.SUCCEEDED, response.content
    assert ("GET", f"subscriptions/{session['subscription']}") in stripe_http.calls()
    subscription = Subscription.objects.get(user=user, tier="enterprise_pro")
    assert (subscription.stripe_subscription_id, subscription.checkout_session_id) == (
        session["subscription"],
        session_id,
    )
    completed = deliver(webhook_client, session_event("checkout.session.completed", session))
    assert completed.json()["result"]["object_id"] == str(subscription.pk)
    assert Subscription.objects.filter(user=user, tier="enterprise_pro").count() == 1
    assert money_events(user=user) == [("checkout_completed", 14_900)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_invoice_of_a_subscription_not_known_here_reads_it_from_stripe_with_no_transaction_open(
    webhook_client, stripe_http
):
    # given: the checkout's invoice.paid first, naming a subscription this side has not recorded yet
    stripe_http.watch_transactions(connection.settings_dict["NAME"])
    user = customer_register("unknown-first@example.com")
    session, invoice_paid = first_invoice_paid_naming_its_subscription_only(stripe_http, user)

    response = deliver(webhook_client, invoice_paid)

    # then: the transaction that found it unknown was rolled back, Stripe read with none open, the
    # event applied once
    assert response.json()["status"] == "processed", response.content
    assert stripe_http.calls().count(("GET", f"subscriptions/{session['subscription']}")) == 1
    assert stripe_http.state.transaction_violations == []
    (row,) = WebhookEvent.objects.filter(event_id=invoice_paid["id"])
    assert (row.attempts, set(row.fetched)) == (1, {session["subscription"]})
    assert Subscription.objects.filter(stripe_subscription_id=session["subscription"]).count() == 1


# checkout.session.expired


def test_an_expired_checkout_gives_its_coupon_back_and_removes_its_stripe_coupon(
    webhook_client, stripe_http, django_capture_on_commit_callbacks
):
    user = customer_register("abandons@example.com")
    coupon = CouponFactory(discount_value=Decimal("20.00"))
    session_id = checkout_started(user, coupon_code=coupon.code)
    (stripe_coupon,) = stripe_http.objects_of("coupon")
    assert CouponRedemption.objects.get(coupon=coupon).status == RedemptionStatus.PENDING
    session = stripe_http.object(session_id)
    session["status"] = "expired"

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(webhook_client, session_event("checkout.session.expired", session))

    assert (response.status_code, response.json()["status"]) == (200, "processed")
    operation = PaymentOperation.objects.get(kind=OperationKind.SUBSCRIPTION_CHECKOUT, user=user)
    assert (operation.state, operation.last_error) == (OperationState.FAILED, "The checkout session expired unpaid.")
    redemption = CouponRedemption.objects.get(coupon=coupon)
    assert (redemption.status, redemption.failure_reason) == (RedemptionStatus.FAILED, "checkout_abandoned")
    assert ("DELETE", f"coupons/{stripe_coupon['id']}") in stripe_http.calls()
    assert stripe_http.objects_of("coupon") == []
    assert live_tier(user) == "free"


# checkout.session.completed with nothing pending here


def test_a_license_checkout_with_no_pending_license_creates_the_license_it_paid_for(webhook_client):
    user = customer_register("buyer@example.com")
    ids = StripeIds.new()
    event = stripe_event(
        "checkout.session.completed",
        ids,
        mode="payment",
        client_reference_id=str(user.pk),
        subscription=None,
        invoice=None,
        payment_intent=ids.payment_intent,
        metadata={"kind": "license", "version": "1.0.0"},
        amount_subtotal=19_900,
        amount_total=19_900,
    )

    response = deliver(webhook_client, event)

    assert response.status_code == 200, response.content
    license_ = PerpetualLicense.objects.get(user=user)
    assert (license_.status, license_.checkout_session_id, license_.purchased_version) == (
        LicenseStatus.ACTIVE,
        ids.session,
        "1.0.0",
    )
    assert license_.purchase_price_usd == Decimal("199.00")
    assert response.json()["result"]["object_id"] == str(license_.pk)
    assert money_events(user=user) == [("checkout_completed", 19_900)]
    # Stripe delivers it again: still one license
    assert deliver(webhook_client, event).json()["replayed"] is True
    assert PerpetualLicense.objects.filter(user=user).count() == 1


def test_a_checkout_naming_only_its_customer_is_linked_through_the_customer_stripe_keeps(webhook_client, stripe_http):
    user = customer_register("buyer@example.com")
    stripe_customer = stripe_api.client().v1.customers.create(
        params={"email": user.email, "metadata": {"user_id": str(user.pk)}}
    )
    ids = StripeIds.new()
    event = stripe_event(
        "checkout.session.completed",
        StripeIds(**{**ids.__dict__, "customer": stripe_customer.id}),
        client_reference_id=None,
        metadata={"kind": "subscription", "tier": "pro", "billing_cycle": "monthly"},
    )

    response = deliver(webhook_client, event)

    assert response.json()["status"] == "processed", response.content
    subscription = Subscription.objects.get(user=user, tier="pro")
    assert (subscription.status, subscription.stripe_customer_id) == (Status.ACTIVE, stripe_customer.id)
    assert StripeCustomer.objects.get(user=user).stripe_customer_id == stripe_customer.id
    assert ("GET", f"customers/{stripe_customer.id}") in stripe_http.calls()
    assert WebhookEvent.objects.get(event_id=event["id"]).fetched[stripe_customer.id]["metadata"] == {
        "user_id": str(user.pk)
    }


def test_a_checkout_naming_no_user_is_unmatched_listed_for_staff_and_reprocessed_once_linked(
    webhook_client, staff_client, staff_user
):
    user = customer_register("buyer@example.com")
    ids = StripeIds.new()  # its customer is neither recorded here nor known to Stripe
    event = stripe_event(
        "checkout.session.completed",
        ids,
        client_reference_id=None,
        metadata={"kind": "subscription", "tier": "pro", "billing_cycle": "monthly"},
    )

    response = deliver(webhook_client, event)

    reason = f"Checkout {ids.session} names no user here (client_reference_id None, customer {ids.customer})."
    assert (response.status_code, response.json()["status"], response.json()["result"]["reason"]) == (
        200,
        "unmatched",
        reason,
    )
    assert not Subscription.objects.filter(user=user, tier="pro").exists()
    listed = staff_client.get(UNMATCHED_URL)
    assert listed.status_code == 200
    (row,) = listed.json()["results"]
    assert (row["event_id"], row["event_type"], row["object_id"], row["unmatched_reason"]) == (
        event["id"],
        "checkout.session.completed",
        ids.session,
        reason,
    )
    still = staff_client.post(f"{UNMATCHED_URL}{event['id']}/reprocess/")
    assert (still.status_code, still.json()["status"]) == (200, "unmatched")

    # staff link the customer to its user, then process the event again
    StripeCustomer.objects.create(user=user, stripe_customer_id=ids.customer)
    reprocessed = staff_client.post(f"{UNMATCHED_URL}{event['id']}/reprocess/")

    assert reprocessed.status_code == 200, reprocessed.content
    assert (reprocessed.json()["status"], reprocessed.json()["unmatched_reason"]) == ("processed", "")
    assert Subscription.objects.get(user=user, tier="pro").status == Status.ACTIVE
    assert staff_client.get(UNMATCHED_URL).json()["results"] == []
    audits = AdminAuditLog.objects.filter(resource_id=event["id"], action=AuditAction.PROCESS, actor=staff_user)
    assert [row.new_value["status"] for row in audits.filter(new_value__replay=True).order_by("sequence")] == [
        "unmatched",
        "processed",
    ]


# Order: an older event never overwrites newer state


def test_an_older_subscription_update_cannot_undo_a_newer_failed_payment(webhook_client, subscriber):
    user, subscription, ids = subscriber
    now = timezone.now()
    deliver(webhook_client, renewal_event(subscription, ids.next_invoice(), "invoice.payment_failed"))

    late = deliver(
        webhook_client, stripe_event("customer.subscription.updated", ids, created=now - MINUTE, status="active")
    )

    assert late.json()["result"] == {"action": "stale_event_skipped", "subscription_id": str(subscription.pk)}
    subscription.refresh_from_db()
    assert subscription.status == Status.PAST_DUE
    assert DunningAttempt.objects.filter(subscription=subscription, result=DunningResult.SCHEDULED).count() == 4


def test_an_older_payment_failure_after_the_invoice_was_voided_changes_nothing(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    now = timezone.now()
    finalized = renewal_event(subscription, renewal, event_type="invoice.finalized", created=now - 2 * MINUTE)
    deliver(webhook_client, finalized)
    assert BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice).status == InvoiceStatus.OPEN
    deliver(
        webhook_client, renewal_event(subscription, renewal, event_type="invoice.voided", status="void", created=now)
    )

    late = deliver(webhook_client, renewal_event(subscription, renewal, "invoice.payment_failed", created=now - MINUTE))

    assert late.json()["result"]["action"] == "stale_event_skipped"
    assert BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice).status == InvoiceStatus.VOID
    assert Subscription.objects.get(pk=subscription.pk).status == Status.ACTIVE
    assert not DunningAttempt.objects.exists()


def test_a_newer_finalized_event_corrects_the_amount_owed_of_an_open_invoice_and_an_older_one_does_not(
    webhook_client, subscriber
):
    # given: the renewal Stripe finalized at 19.00, open here
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    now = timezone.now()
    open_fields = {"status": "open", "amount_paid": 0, "amount_remaining": 1900}
    deliver(
        webhook_client,
        renewal_event(subscription, renewal, event_type="invoice.finalized", created=now - 3 * MINUTE, **open_fields),
    )
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert (invoice.status, invoice.amount_due) == (InvoiceStatus.OPEN, 1900)

    # when: Stripe's newer word on it is 15.00 owed, then an older one 17.00 arrives late
    newer = deliver(
        webhook_client,
        renewal_event(
            subscription,
            renewal,
            event_type="invoice.finalized",
            created=now - MINUTE,
            **open_fields | {"amount_due": 1500, "amount_remaining": 1500, "total": 1500, "subtotal": 1500},
        ),
    )
    older = deliver(
        webhook_client,
        renewal_event(
            subscription,
            renewal,
            event_type="invoice.finalized",
            created=now - 2 * MINUTE,
            **open_fields | {"amount_due": 1700, "amount_remaining": 1700, "total": 1700, "subtotal": 1700},
        ),
    )

    # then: the open invoice owes what Stripe says, audited; no money moved
    assert newer.json()["result"]["amounts_corrected"] == {"amount_due": [1900, 1500]}
    assert older.json()["result"]["action"] == "stale_event_skipped"
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_due, invoice.amount_due_usd, invoice.amount_paid) == (
        InvoiceStatus.OPEN,
        1500,
        Decimal("15.00"),
        0,
    )
    assert money_events(invoice_id=renewal.invoice) == []
    audited = AdminAuditLog.objects.filter(resource_type="subscriptions.billinginvoice", resource_id=str(invoice.pk))
    assert audited.filter(
        action=AuditAction.UPDATE, previous_value__amount_due=1900, new_value__amount_due=1500
    ).exists()


def test_an_older_customer_update_after_its_deletion_does_not_bring_it_back(webhook_client):
    user = customer_register("customer@example.com")
    ids = StripeIds.new()
    StripeCustomer.objects.create(user=user, stripe_customer_id=ids.customer)
    now = timezone.now()
    updated = stripe_event("customer.updated", ids, created=now - MINUTE, metadata={"user_id": str(user.pk)})
    deleted = stripe_event("customer.updated", ids, event_type="customer.deleted", created=now)

    assert deliver(webhook_client, deleted).json()["result"]["action"] == "customer_forgotten"
    late = deliver(webhook_client, updated)

    assert late.json()["result"]["action"] == "stale_event_skipped"
    assert not StripeCustomer.objects.filter(user=user).exists()


def test_a_late_payment_of_an_older_invoice_does_not_reactivate_and_dunning_goes_on(
    webhook_client, subscriber, stripe_http
):
    # given: the renewal failed (past_due, retries scheduled) and Stripe's invoice is still open
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    deliver(webhook_client, renewal_event(subscription, renewal, "invoice.payment_failed"))
    stripe_http.invoice_open(renewal.invoice, customer=ids.customer, amount=1900, subscription=ids.subscription)
    first_period = subscription.current_period_start

    # when: a late invoice.payment_succeeded of the older, first invoice arrives
    late = deliver(
        webhook_client,
        stripe_event(
            "invoice.paid",
            ids,
            event_type="invoice.payment_succeeded",
            period=(first_period, subscription.current_period_end),
            billing_reason="subscription_create",
        ),
    )

    # then: still past_due, the renewal's retries still scheduled
    assert late.json()["result"]["subscription_status"] == Status.PAST_DUE
    subscription.refresh_from_db()
    assert (subscription.status, subscription.current_period_start) == (Status.PAST_DUE, first_period)
    attempts = DunningAttempt.objects.filter(invoice__stripe_invoice_id=renewal.invoice)
    assert set(attempts.values_list("result", flat=True)) == {DunningResult.SCHEDULED}

    # and dunning reaches the grace period, then suspension, as normal
    stripe_http.pay_mode = "decline"
    retried_at = timezone.now() + timedelta(days=7, hours=1)
    with time_machine.travel(retried_at, tick=False):
        assert dunning_run() == {"retry_failed": 4}
    subscription.refresh_from_db()
    assert (subscription.status, subscription.grace_period_ends_at) == (Status.GRACE_PERIOD, retried_at + 7 * DAY)
    with time_machine.travel(subscription.grace_period_ends_at + MINUTE, tick=False):
        assert dunning_run() == {"suspended": 1}
    assert Subscription.objects.get(pk=subscription.pk).status == Status.SUSPENDED
    assert UserEntitlement.objects.get(user=user).tier == "free"


# Invoices


def test_an_invoice_needing_the_customers_action_emails_its_hosted_link_once_per_payment(
    webhook_client, subscriber, django_capture_on_commit_callbacks
):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    link = f"https://invoice.stripe.com/i/acct_1Sample/{renewal.invoice}"

    def asked():
        return renewal_event(
            subscription, renewal, event_type="invoice.payment_action_required", status="open", hosted_invoice_url=link
        )

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(webhook_client, asked())
    with django_capture_on_commit_callbacks(execute=True):
        again = deliver(webhook_client, asked())  # Stripe asks again about the same payment

    assert response.json()["result"] == {"action": "customer_asked_to_confirm", "user_id": user.pk, "emailed": True}
    assert again.json()["result"]["emailed"] is False
    (notification,) = Notification.objects.filter(kind="payment.action_required")
    assert notification.occurrence == f"{renewal.invoice}:1"  # the invoice's attempt: it names no payment intent
    (outbound,) = OutboundEvent.objects.filter(type="payment.action_required")
    assert (outbound.user, outbound.data["hosted_invoice_url"], outbound.data["amount"]) == (user, link, "19.00")
    (message,) = mail.outbox
    assert message.to == [user.email]
    assert message.subject == "Your payment of 19.00 USD needs your confirmation"
    assert link in message.body
    assert link in message.alternatives[0][0]
    fact = PaymentEvent.objects.filter(event_type="invoice_payment_action_required").first()
    assert (fact.user, fact.invoice_id, fact.subscription_id, fact.amount) == (
        user,
        renewal.invoice,
        ids.subscription,
        None,
    )
    assert Subscription.objects.get(pk=subscription.pk).status == Status.ACTIVE


def test_an_invoice_stripe_marks_uncollectible_stops_retries_and_starts_the_grace_period(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    deliver(webhook_client, renewal_event(subscription, renewal, "invoice.payment_failed"))

    response = deliver(
        webhook_client,
        renewal_event(subscription, renewal, event_type="invoice.marked_uncollectible", status="uncollectible"),
    )

    assert response.json()["result"]["subscription_status"] == Status.GRACE_PERIOD
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert invoice.status == InvoiceStatus.UNCOLLECTIBLE
    assert set(invoice.dunning_attempts.values_list("result", flat=True)) == {DunningResult.CANCELLED}
    assert Subscription.objects.get(pk=subscription.pk).grace_period_ends_at is not None


def test_a_voided_invoice_stops_its_retries(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    deliver(webhook_client, renewal_event(subscription, renewal, "invoice.payment_failed"))

    response = deliver(webhook_client, renewal_event(subscription, renewal, event_type="invoice.voided", status="void"))

    assert response.json()["result"]["action"] == "invoice_void"
    invoice = BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice)
    assert invoice.status == InvoiceStatus.VOID
    assert set(invoice.dunning_attempts.values_list("result", flat=True)) == {DunningResult.CANCELLED}


def test_the_renewal_period_is_the_subscription_price_lines_not_an_invoice_items(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    event = renewal_event(subscription, renewal)
    lines = event["data"]["object"]["lines"]["data"]
    price_line = lines[0]
    moment = price_line["period"]["start"] - 3600
    item_line = {
        **price_line,
        "id": "il_item",
        "amount": 500,
        "subtotal": 500,
        "description": "One-off setup",
        "period": {"start": moment, "end": moment},
        "parent": {
            "type": "invoice_item_details",
            "invoice_item_details": {
                "invoice_item": "ii_1",
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": ids.subscription,
            },
            "subscription_item_details": None,
        },
    }
    event["data"]["object"]["lines"]["data"] = [item_line, price_line]

    response = deliver(webhook_client, event)

    assert response.status_code == 200, response.content
    subscription.refresh_from_db()
    assert int(subscription.current_period_start.timestamp()) == price_line["period"]["start"]
    assert int(subscription.current_period_end.timestamp()) == price_line["period"]["end"]


def test_an_invoice_without_periods_renews_into_the_period_after_the_current_one(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    event = renewal_event(subscription, renewal)
    invoice = event["data"]["object"]
    del invoice["period_start"], invoice["period_end"]
    invoice["lines"]["data"] = []
    old_end = subscription.current_period_end

    response = deliver(webhook_client, event)

    assert response.json()["status"] == "processed", response.content
    subscription.refresh_from_db()
    assert subscription.current_period_start == old_end
    assert BillingInvoice.objects.get(stripe_invoice_id=renewal.invoice).status == InvoiceStatus.PAID


# Stripe-side subscription changes


def test_a_price_changed_on_stripes_side_moves_the_subscription_to_that_tier(webhook_client, subscriber):
    user, subscription, ids = subscriber
    event = stripe_event("customer.subscription.updated", ids)
    item = event["data"]["object"]["items"]["data"][0]
    item["price"]["unit_amount"], item["price"]["unit_amount_decimal"] = 3900, "3900"

    response = deliver(webhook_client, event)

    assert (response.json()["result"]["tier"], response.json()["result"]["tier_changed"]) == ("pro_max", True)
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.base_price_usd, subscription.monthly_credit_allocation) == (
        "pro_max",
        Decimal("39.00"),
        50_000,
    )
    assert UserEntitlement.objects.get(user=user).tier == "pro_max"
    audit = AdminAuditLog.objects.filter(resource_id=str(subscription.pk), action=AuditAction.UPDATE).latest("sequence")
    assert (audit.previous_value["tier"], audit.new_value["tier"]) == ("pro", "pro_max")


def test_a_cancellation_date_set_on_stripes_side_is_mirrored(webhook_client, subscriber):
    user, subscription, ids = subscriber
    cancel_at = int((timezone.now() + timedelta(days=10)).timestamp())

    deliver(webhook_client, stripe_event("customer.subscription.updated", ids, cancel_at=cancel_at))

    subscription.refresh_from_db()
    assert int(subscription.cancel_at.timestamp()) == cancel_at
    assert subscription.status == Status.ACTIVE


def test_a_paused_subscription_loses_its_paid_access_until_it_resumes(webhook_client, subscriber):
    user, subscription, ids = subscriber
    now = timezone.now()

    paused = deliver(
        webhook_client,
        stripe_event(
            "customer.subscription.updated",
            ids,
            event_type="customer.subscription.paused",
            status="paused",
            created=now - MINUTE,
        ),
    )

    assert paused.json()["result"]["pause"] == "paused"
    subscription.refresh_from_db()
    assert (subscription.status, subscription.paused_at is not None) == (Status.ACTIVE, True)
    assert UserEntitlement.objects.get(user=user).tier == "free"

    resumed = deliver(
        webhook_client,
        stripe_event("customer.subscription.updated", ids, event_type="customer.subscription.resumed", created=now),
    )

    assert resumed.json()["result"]["pause"] == "resumed"
    subscription.refresh_from_db()
    assert subscription.paused_at is None
    assert UserEntitlement.objects.get(user=user).tier == "pro"
    kinds = PaymentEvent.objects.filter(subscription_id=ids.subscription).values_list("event_type", flat=True)
    assert {"subscription_paused", "subscription_resumed"} <= set(kinds)


def test_stripes_trial_ending_is_noted(webhook_client, subscriber):
    user, subscription, ids = subscriber

    response = deliver(
        webhook_client,
        stripe_event("customer.subscription.updated", ids, event_type="customer.subscription.trial_will_end"),
    )

    assert response.json()["result"] == {"action": "trial_will_end_noted", "subscription_id": str(subscription.pk)}
    assert PaymentEvent.objects.filter(event_type="subscription_trial_will_end").count() == 1


def test_a_subscription_created_by_a_checkout_still_under_way_waits_for_that_checkout(webhook_client, stripe_http):
    user = customer_register("buyer@example.com")
    checkout_started(user)
    operation = PaymentOperation.objects.get(kind=OperationKind.SUBSCRIPTION_CHECKOUT, user=user)
    ids = StripeIds.new()

    response = deliver(
        webhook_client,
        stripe_event(
            "customer.subscription.updated",
            ids,
            event_type="customer.subscription.created",
            metadata={"operation_id": str(operation.pk), "kind": "subscription"},
        ),
    )

    assert response.json()["result"] == {"action": "awaiting_checkout", "operation_id": str(operation.pk)}


@pytest.mark.parametrize("event_type", ["customer.subscription.created", "customer.subscription.deleted"])
def test_a_subscription_not_known_here_is_unmatched_then_applied_once_it_is(webhook_client, event_type):
    user = customer_register("buyer@example.com")
    ids = StripeIds.new()
    event = stripe_event("customer.subscription.updated", ids, event_type=event_type)

    response = deliver(webhook_client, event)

    assert (response.status_code, response.json()["status"]) == (200, "unmatched")
    assert response.json()["result"]["reason"] == f"No subscription {ids.subscription} here ({event_type})."
    subscribe_through_checkout(webhook_client, user, ids)

    again = deliver(webhook_client, event)  # Stripe (or staff) delivers it again

    assert again.json()["status"] == "processed"
    assert WebhookEvent.objects.get(event_id=event["id"]).status == WebhookStatus.PROCESSED


# Customers


def test_a_customer_update_links_the_customer_its_metadata_names(webhook_client):
    user = customer_register("customer@example.com")
    ids = StripeIds.new()

    response = deliver(webhook_client, stripe_event("customer.updated", ids, metadata={"user_id": str(user.pk)}))

    assert response.json()["result"] == {"action": "customer_updated", "customer_id": ids.customer, "user_id": user.pk}
    assert StripeCustomer.objects.get(user=user).stripe_customer_id == ids.customer
    assert PaymentEvent.objects.get(event_type="customer_updated").customer_id == ids.customer


def test_a_customer_deleted_at_stripe_is_forgotten_and_an_unknown_one_is_unmatched(webhook_client):
    user = customer_register("customer@example.com")
    ids = StripeIds.new()
    StripeCustomer.objects.create(user=user, stripe_customer_id=ids.customer)

    deleted = deliver(webhook_client, stripe_event("customer.updated", ids, event_type="customer.deleted"))
    stranger = deliver(webhook_client, stripe_event("customer.updated", StripeIds.new(), metadata={}))

    assert deleted.json()["result"]["action"] == "customer_forgotten"
    assert not StripeCustomer.objects.filter(user=user).exists()
    assert stranger.json()["status"] == "unmatched"
    assert stranger.json()["result"]["reason"].endswith("belongs to no user here.")


# Who retries a failed payment


def test_with_stripe_owning_retries_the_project_schedules_none_and_stripes_last_attempt_starts_grace(
    webhook_client, subscriber, settings
):
    settings.PAYMENT_RETRIES_OWNER = "stripe"
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()

    deliver(webhook_client, renewal_event(subscription, renewal, "invoice.payment_failed"))

    assert Subscription.objects.get(pk=subscription.pk).status == Status.PAST_DUE
    assert not DunningAttempt.objects.exists()
    assert not PaymentOperation.objects.filter(kind=OperationKind.SUBSCRIPTION_SYNC).exists()

    deliver(
        webhook_client,
        renewal_event(subscription, renewal, "invoice.payment_failed", attempt_count=4, next_payment_attempt=None),
    )

    subscription.refresh_from_db()
    assert subscription.status == Status.GRACE_PERIOD
    assert not DunningAttempt.objects.exists()


def test_with_the_project_owning_retries_stripe_stops_retrying_the_invoice(
    webhook_client, subscriber, stripe_http, django_capture_on_commit_callbacks
):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    stripe_invoice = stripe_http.invoice_open(
        renewal.invoice, customer=ids.customer, amount=1900, subscription=ids.subscription
    )
    stripe_invoice["auto_advance"] = True

    with django_capture_on_commit_callbacks(execute=True):
        deliver(webhook_client, renewal_event(subscription, renewal, "invoice.payment_failed"))

    assert DunningAttempt.objects.filter(invoice__stripe_invoice_id=renewal.invoice).count() == 4
    assert stripe_http.object(renewal.invoice)["auto_advance"] is False
    operation = PaymentOperation.objects.get(kind=OperationKind.SUBSCRIPTION_SYNC)
    assert (operation.params["action"], operation.state) == ("invoice_retries_off", OperationState.SUCCEEDED)


def test_the_console_lists_unmatched_events_with_their_reason(webhook_client, admin_client, subscriber):
    user, subscription, ids = subscriber
    unknown = StripeIds.new()
    unmatched = stripe_event("customer.subscription.updated", unknown)
    deliver(webhook_client, unmatched)
    deliver(webhook_client, renewal_event(subscription, ids.next_invoice()))

    response = admin_client.get(reverse("admin:payments_webhookevent_changelist"), {"unmatched": "yes"})

    assert response.status_code == 200
    listed = list(response.context["cl"].result_list)
    assert [row.event_id for row in listed] == [unmatched["id"]]
    assert f"No subscription {unknown.subscription} here (customer.subscription.updated)." in response.text


def test_with_stripe_owning_retries_a_charge_the_project_made_itself_is_still_retried_by_the_project(
    settings, subscriber
):
    settings.PAYMENT_RETRIES_OWNER = "stripe"
    user, subscription, ids = subscriber
    start = subscription.current_period_end

    invoice_payment_failed(
        subscription=subscription,
        amount_due=1900,
        currency="usd",
        period_start=start,
        period_end_at=start + MONTH,
        reason="The renewal payment failed.",
    )

    assert DunningAttempt.objects.filter(subscription=subscription).count() == 4
    assert Subscription.objects.get(pk=subscription.pk).status == Status.PAST_DUE
