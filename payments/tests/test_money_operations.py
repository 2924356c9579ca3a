"""Every money operation against the Stripe emulator (PostgreSQL, real commits): checkouts, renewal
charges, dunning retries, staff refunds; asynchronous payments; a hanging Stripe; Stripe's refusals;
jobs that go on past a failing item; reconcile_payments; one customer per user."""

import threading
import time
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from auditlog.models import LogEntry
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from billing_project.money import usd_to_cents
from billing_project.service_tokens import service_token_issue
from conftest import access_token_for, bearer, role_grant, run_concurrently
from coupons.models import CouponRedemption, RedemptionStatus
from coupons.tests.factories import CouponFactory
from credits.services import pricing_catalog_seed
from credits.tests.conftest import usage_event
from licensing.models import LicenseStatus, PerpetualLicense
from payments.models import OperationKind, OperationState, Payment, PaymentEvent, PaymentOperation, StripeCustomer
from payments.services.reconcile import payments_reconcile
from payments.tests.conftest import client_for, customer, ledger_is_consistent, stripe_subscriber
from payments.tests.helpers import deliver_event
from subscriptions import jobs
from subscriptions.models import BillingInvoice, DunningAttempt, PaymentTransaction, ProrationEvent, Subscription
from subscriptions.services import dunning_run, invoice_payment_failed
from subscriptions.services.lifecycle import subscription_lock
from subscriptions.tests.factories import SubscriptionFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("catalog")]

LATER = timedelta(minutes=20)  # past PAYMENT_RECONCILE_AFTER_MINUTES


def change_tier(subscription, tier="enterprise_max", **headers):
    return client_for(subscription.user).post(
        f"/api/v1/subscriptions/{subscription.pk}/change-tier/", {"tier": tier}, format="json", **headers
    )


# Asynchronous payments


def test_an_upgrade_paid_by_an_asynchronous_method_waits_for_invoice_paid_then_applies_once(stripe):
    # given: the customer's payment method settles later (SEPA, ACH): pay answers with the invoice open
    subscription = stripe_subscriber(stripe)
    stripe.pay_mode = "async"

    response = change_tier(subscription)

    # then: 202, the change pending, nothing applied, nothing granted
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["proration"]["status"], body["payment"]["state"]) == ("pending", "submitted")
    subscription.refresh_from_db()
    assert subscription.tier == "enterprise_pro"
    assert not BillingInvoice.objects.filter(description__startswith="Upgrade").exists()
    operation = PaymentOperation.objects.get(kind=OperationKind.UPGRADE_CHARGE)
    assert stripe.charges == []

    # a retry meanwhile changes nothing and asks Stripe nothing new
    again = change_tier(subscription)
    assert (again.status_code, again.json()["payment"]["id"]) == (202, str(operation.pk))
    # and another change waits for this payment
    other = change_tier(subscription, tier="pro_max")
    assert (other.status_code, other.json()["code"]) == (409, "payment_in_progress")

    # when: the debit clears, and Stripe sends both of its events for it
    invoice = stripe.async_payment_settle(operation.stripe_invoice_id, succeeded=True)
    deliver_event("invoice.paid", invoice)
    deliver_event("invoice.payment_succeeded", invoice)

    # then: applied once
    subscription.refresh_from_db()
    assert subscription.tier == "enterprise_max"
    assert ProrationEvent.objects.get().status == "applied"
    assert PaymentEvent.objects.filter(event_type="charge_succeeded").count() == 1
    assert len(stripe.charges) == 1
    assert ledger_is_consistent()


def test_an_asynchronous_payment_that_fails_applies_nothing_and_voids_its_invoice(stripe):
    subscription = stripe_subscriber(stripe)
    stripe.pay_mode = "async"
    assert change_tier(subscription).status_code == 202
    operation = PaymentOperation.objects.get(kind=OperationKind.UPGRADE_CHARGE)

    invoice = stripe.async_payment_settle(operation.stripe_invoice_id, succeeded=False)
    deliver_event("invoice.payment_failed", invoice)

    operation.refresh_from_db()
    assert (operation.state, operation.effect) == (OperationState.FAILED, "failed")
    assert stripe.object(operation.stripe_invoice_id)["status"] == "void"
    assert ProrationEvent.objects.get().status == "failed"
    subscription.refresh_from_db()
    assert subscription.tier == "enterprise_pro"


def test_a_card_that_needs_the_customer_makes_the_upgrade_wait(stripe):
    subscription = stripe_subscriber(stripe)
    stripe.pay_mode = "action_required"

    response = change_tier(subscription)

    assert response.status_code == 202, response.content
    operation = PaymentOperation.objects.get(kind=OperationKind.UPGRADE_CHARGE)
    assert (operation.state, operation.stripe_objects["awaiting"]) == (OperationState.SUBMITTED, "customer_action")
    subscription.refresh_from_db()
    assert subscription.tier == "enterprise_pro"


def test_a_dunning_retry_left_open_by_stripe_is_not_counted_as_paid(stripe):
    # given: a renewal invoice Stripe failed to collect, and a retry answered "open" (async debit)
    subscription = stripe_subscriber(stripe)
    stripe.invoice_open("in_overdue", customer=subscription.stripe_customer_id, amount=14_900)
    locked_at = subscription.current_period_end
    with time_machine.travel(locked_at + timedelta(hours=1), tick=False):
        _renewal_failed(subscription, "in_overdue")
    stripe.pay_mode = "async"

    with time_machine.travel(locked_at + timedelta(days=1, hours=1), tick=False):
        outcomes = dunning_run()

    # then: processing, the subscription still past due
    assert outcomes == {"retry_processing": 1}
    subscription.refresh_from_db()
    assert subscription.status == "past_due"
    attempt = DunningAttempt.objects.get(attempt_number=1)
    assert attempt.result == "processing"
    assert BillingInvoice.objects.get(stripe_invoice_id="in_overdue").status == "open"

    # when the debit clears, its event settles it once
    deliver_event("invoice.paid", stripe.async_payment_settle("in_overdue", succeeded=True))
    subscription.refresh_from_db()
    attempt.refresh_from_db()
    assert (subscription.status, attempt.result) == ("active", "succeeded")


def _renewal_failed(subscription, stripe_invoice_id):
    from django.db import transaction

    with transaction.atomic():
        locked = subscription_lock(subscription.pk)
        invoice_payment_failed(
            subscription=locked,
            amount_due=usd_to_cents(locked.base_price_usd),
            period_start=locked.current_period_end,
            period_end_at=locked.current_period_end + timedelta(days=30),
            reason="Your card was declined.",
            stripe_invoice_id=stripe_invoice_id,
        )


# A hanging or refusing Stripe


def test_a_hanging_stripe_is_a_503_within_the_timeout_and_other_requests_go_on(stripe, settings):
    subscription = stripe_subscriber(stripe)
    settings.STRIPE_READ_TIMEOUT_SECONDS = 1
    stripe.inject("POST", "invoices", "hang", seconds=3)
    pricing_catalog_seed()
    service = APIClient()
    service.credentials(**bearer(service_token_issue(service="gateway", scopes=["usage:write"]).token))
    answers = {}

    def upgrade():
        try:
            answers["upgrade"] = change_tier(subscription)
        finally:
            connections.close_all()

    hanging = threading.Thread(target=upgrade)
    hanging.start()
    stripe.wait_for_request("POST", "invoices")
    # meanwhile: the public catalog and the same user's usage answer (no lock is held) while the
    # upgrade still waits on Stripe
    tiers = Client().get("/api/v1/tiers/")
    usage = service.post("/api/v1/usage/record/", usage_event(subscription.user), format="json")
    upgrade_still_waiting = hanging.is_alive()
    hanging.join()

    # Stripe hangs 3 s: only the 1 s read timeout makes the answer a 503
    assert answers["upgrade"].status_code == 503
    assert answers["upgrade"]["Retry-After"] == "30"
    assert (tiers.status_code, usage.status_code) == (200, 201)
    assert upgrade_still_waiting


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("rate_limited", 503, "payment_provider_unavailable"), ("invalid", 502, "payment_provider_error")],
)
def test_stripes_refusals_are_told_apart(stripe, caplog, fault, status, code):
    subscription = stripe_subscriber(stripe)
    stripe.inject("POST", "invoices", fault)

    response = change_tier(subscription)

    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    operation = PaymentOperation.objects.get(kind=OperationKind.UPGRADE_CHARGE)
    if fault == "invalid":
        # not solved by retrying: logged at ERROR with Stripe's request id, the operation failed
        assert "retry" not in response.json()["detail"].replace("not solved by retrying", "")
        assert response.json()["provider_request_id"].startswith("req_emulated_")
        errors = [record for record in caplog.records if record.levelname == "ERROR" and "refused" in record.message]
        assert any("req_emulated_" in record.message for record in errors)
        assert (operation.state, ProrationEvent.objects.get().status) == (OperationState.FAILED, "failed")
    else:
        assert response["Retry-After"] == "30"
        assert operation.state == OperationState.PENDING


# Checkouts


def start(user, tier="enterprise_pro", key=None, **body):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client_for(user).post("/api/v1/subscriptions/", {"tier": tier, **body}, format="json", **headers)


@pytest.mark.parametrize("retry_with_key", [True, False], ids=["same_key", "no_key"])
@pytest.mark.parametrize("fault", ["unavailable", "drop"])
@pytest.mark.parametrize("step", ["customers", "coupons", "checkout/sessions"])
def test_a_checkout_start_failing_at_any_step_gives_one_session_on_retry_and_is_paid_once(
    stripe, step, fault, retry_with_key
):
    # given: a customer starting Enterprise Pro with a coupon, and Stripe failing once at one step
    user = customer("buyer@example.com")
    coupon = CouponFactory(discount_value=Decimal("20.00"), max_uses_per_user=1)
    stripe.inject("POST", step, fault)
    key = "start-1" if retry_with_key else None

    first = start(user, key=key, coupon_code=coupon.code)
    assert first.status_code == 503, first.content
    again = start(user, key=key, coupon_code=coupon.code)

    # then: the same checkout, one customer, one coupon at Stripe, the coupon held once
    assert again.status_code == 201, again.content
    assert len(stripe.objects_of("customer")) == 1
    assert len(stripe.objects_of("coupon")) == 1
    (session,) = stripe.objects_of("checkout.session")
    assert again.json()["checkout"]["session_id"] == session["id"]
    (held,) = CouponRedemption.objects.filter(coupon=coupon)
    assert held.status == RedemptionStatus.PENDING

    # when: the customer pays and the event comes twice
    paid = stripe.checkout_complete(session["id"])
    deliver_event("checkout.session.completed", paid)
    deliver_event("checkout.session.completed", paid)

    # then: one subscription, one invoice, the coupon redeemed, one charge of 119.20
    subscription = Subscription.objects.get(user=user, tier="enterprise_pro")
    assert subscription.stripe_customer_id == StripeCustomer.objects.get(user=user).stripe_customer_id
    assert BillingInvoice.objects.filter(subscription=subscription).count() == 1
    held.refresh_from_db()
    assert held.status == RedemptionStatus.SUCCESS
    assert [charge["amount"] for charge in stripe.charges] == [11_920]
    assert ledger_is_consistent()


def test_a_checkout_never_paid_is_expired_by_reconcile_and_gives_its_coupon_back(stripe):
    user = customer("buyer@example.com")
    coupon = CouponFactory(discount_value=Decimal("20.00"))
    assert start(user, coupon_code=coupon.code).status_code == 201

    with time_machine.travel(timezone.now() + timedelta(hours=26)):
        assert payments_reconcile() == {"failed": 1}

    operation = PaymentOperation.objects.get(kind=OperationKind.SUBSCRIPTION_CHECKOUT)
    assert (operation.state, operation.effect) == (OperationState.FAILED, "failed")
    assert stripe.objects_of("checkout.session")[0]["status"] == "expired"
    redemption = CouponRedemption.objects.get(coupon=coupon)
    assert (redemption.status, redemption.failure_reason) == (RedemptionStatus.FAILED, "checkout_abandoned")


@pytest.mark.parametrize("fault", ["unavailable", "drop"])
def test_a_license_purchase_failing_at_the_session_gives_the_same_license_and_session_on_retry(stripe, fault):
    user = customer("buyer@example.com")
    stripe.inject("POST", "checkout/sessions", fault)

    assert client_for(user).post("/api/v1/licenses/purchase/", {}, format="json").status_code == 503
    again = client_for(user).post("/api/v1/licenses/purchase/", {}, format="json")

    assert again.status_code == 201, again.content
    (license_,) = PerpetualLicense.objects.filter(user=user)
    assert again.json()["license"]["id"] == str(license_.pk)
    (session,) = stripe.objects_of("checkout.session")
    deliver_event("checkout.session.completed", stripe.checkout_complete(session["id"]))
    license_.refresh_from_db()
    assert license_.status == LicenseStatus.ACTIVE
    assert [charge["amount"] for charge in stripe.charges] == [19_900]


def test_one_stripe_customer_per_user_even_for_two_first_checkouts_at_once(stripe_http):
    # (concurrent requests: one may sit in its own transaction while the other asks Stripe, so the
    # emulator's transaction watch is for the single-client tests)
    stripe = stripe_http
    user = customer("buyer@example.com")

    answers = run_concurrently(
        lambda path: client_for(user).post(path, {}, format="json"),
        ["/api/v1/licenses/purchase/", "/api/v1/licenses/purchase/"],
    )

    assert not [answer for answer in answers if isinstance(answer, Exception)], answers
    assert len(stripe.objects_of("customer")) == 1
    assert StripeCustomer.objects.filter(user=user).count() == 1
    sessions = stripe.objects_of("checkout.session")
    assert {session["customer"] for session in sessions} == {stripe.objects_of("customer")[0]["id"]}


# Renewal charges (the roll-over job) and dunning retries


def offline_billed(stripe, email: str, *, tier="pro", price="19.00") -> Subscription:
    """A paid plan that Stripe does not bill by itself: renewed by the job with a one-off charge."""
    user = customer(email)
    customer_id = stripe._store(
        {"id": f"cus_{user.pk}", "object": "customer", "email": email, "metadata": {}, "created": 0}
    )["id"]
    StripeCustomer.objects.create(user=user, stripe_customer_id=customer_id)
    Subscription.objects.filter(user=user).update(status="cancelled")
    start_at = timezone.now() - timedelta(days=30)
    return SubscriptionFactory(
        user=user,
        tier=tier,
        base_price_usd=Decimal(price),
        stripe_customer_id=customer_id,
        stripe_subscription_id=None,
        current_period_start=start_at,
        current_period_end=start_at + timedelta(days=30) - timedelta(minutes=5),
    )


@pytest.mark.parametrize("fault", ["unavailable", "drop", "hang"])
@pytest.mark.parametrize("step", ["invoices", "invoiceitems", r"invoices/[^/]+/pay"])
def test_a_renewal_charge_failing_at_any_step_is_resumed_by_the_next_run_and_charged_once(
    stripe, settings, step, fault
):
    settings.STRIPE_READ_TIMEOUT_SECONDS = 0.5
    subscription = offline_billed(stripe, "renewing@example.com")
    stripe.inject("POST", step, fault, seconds=1.0)

    first = jobs.monthly_credits_allocate()
    assert first["payment_deferred"] == 1
    if fault == "hang":
        time.sleep(1.2)
    second = jobs.monthly_credits_allocate()
    third = jobs.monthly_credits_allocate()

    assert second["renewed"] == 1
    assert "renewed" not in third
    subscription.refresh_from_db()
    assert subscription.current_period_end > timezone.now()
    assert [charge["amount"] for charge in stripe.charges] == [1900]
    assert BillingInvoice.objects.filter(subscription=subscription, status="paid").count() == 1
    assert PaymentOperation.objects.get(kind=OperationKind.RENEWAL_CHARGE).state == OperationState.SUCCEEDED
    assert ledger_is_consistent()


def test_a_renewal_charged_but_not_committed_is_renewed_once_by_the_next_run(stripe, fail_inserts_into):
    subscription = offline_billed(stripe, "renewing@example.com")
    lift = fail_inserts_into("payments_paymentevent")

    assert jobs.monthly_credits_allocate()["failed"] == 1
    lift()
    assert jobs.monthly_credits_allocate()["renewed"] == 1

    assert [charge["amount"] for charge in stripe.charges] == [1900]
    assert BillingInvoice.objects.filter(subscription=subscription, status="paid").count() == 1


def test_a_renewal_the_job_charged_has_its_invoice_and_payments_in_the_object_history(stripe):
    subscription = offline_billed(stripe, "renewing@example.com")

    assert jobs.monthly_credits_allocate()["renewed"] == 1

    operation = PaymentOperation.objects.get(kind=OperationKind.RENEWAL_CHARGE, subject_id=str(subscription.pk))
    invoice = BillingInvoice.objects.get(stripe_invoice_id=operation.stripe_invoice_id)
    created = [invoice, PaymentTransaction.objects.get(invoice=invoice), Payment.objects.get(operation=operation)]
    for row in created:
        assert LogEntry.objects.get_for_object(row).filter(action=LogEntry.Action.CREATE).count() == 1, row


def test_stripes_later_word_on_a_renewal_charges_invoice_corrects_what_was_recorded_without_moving_money(stripe):
    # given: a renewal the job charged 19.00 on an invoice of its own
    subscription = offline_billed(stripe, "renewing@example.com")
    assert jobs.monthly_credits_allocate()["renewed"] == 1
    operation = PaymentOperation.objects.get(kind=OperationKind.RENEWAL_CHARGE, subject_id=str(subscription.pk))
    money = list(PaymentEvent.objects.exclude(amount=None).values_list("event_type", "amount"))

    # when: Stripe's invoice.paid says 17.00 was charged (the customer's balance paid the rest)
    stripe_invoice = stripe.object(operation.stripe_invoice_id)
    stripe_invoice.update(amount_due=1700, amount_paid=1700)
    row, _ = deliver_event("invoice.paid", stripe_invoice)

    # then: the invoice, its payment and the money received say 17.00, with Stripe's number; no money moved
    assert (row.result["action"], row.result["amounts_corrected"]) == (
        "operation_settled",
        {"amount_due": [1900, 1700], "amount_paid": [1900, 1700]},
    )
    invoice = BillingInvoice.objects.get(stripe_invoice_id=operation.stripe_invoice_id)
    assert (invoice.amount_paid, invoice.amount_paid_usd, invoice.number) == (
        1700,
        Decimal("17.00"),
        stripe_invoice["number"],
    )
    assert PaymentTransaction.objects.get(invoice=invoice).amount == 1700
    assert Payment.objects.get(stripe_invoice_id=operation.stripe_invoice_id).amount == 1700
    assert list(PaymentEvent.objects.exclude(amount=None).values_list("event_type", "amount")) == money


def test_one_failing_subscription_does_not_stop_the_roll_over_job(stripe):
    # given: three ended periods: a paid plan Stripe refuses to charge (a bad request), another paid
    # plan, and a free plan after them
    refused = offline_billed(stripe, "refused@example.com")
    paid = offline_billed(stripe, "paid@example.com", tier="pro_max", price="39.00")
    free = Subscription.objects.filter(user=customer("free@example.com")).get()
    Subscription.objects.filter(pk=free.pk).update(
        current_period_start=timezone.now() - timedelta(days=30),
        current_period_end=timezone.now() - timedelta(minutes=1),
    )
    stripe.inject("POST", "invoices", "invalid")

    outcomes = jobs.monthly_credits_allocate()

    # then: the refused one is recorded, the others renewed
    assert (outcomes["payment_failed"], outcomes["renewed"]) == (1, 2)
    refused.refresh_from_db()
    assert refused.status == "past_due"
    failed = PaymentOperation.objects.get(kind=OperationKind.RENEWAL_CHARGE, subject_id=str(refused.pk))
    assert (failed.state, "refused" in failed.last_error) == (OperationState.FAILED, True)
    for subscription in (paid, free):
        subscription.refresh_from_db()
        assert subscription.current_period_end > timezone.now()


def test_an_offline_invoice_retried_by_dunning_is_charged_once_across_overlapping_runs(stripe_http):
    stripe = stripe_http  # concurrent runs: see test_one_stripe_customer_per_user_even_for_two_first_checkouts
    subscription = offline_billed(stripe, "late@example.com")
    stripe.pay_mode = "decline"
    jobs.monthly_credits_allocate()
    subscription.refresh_from_db()
    assert subscription.status == "past_due"
    stripe.pay_mode = "paid"

    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=1)):
        outcomes = run_concurrently(lambda _: dunning_run(), [1, 2, 3])

    assert not [outcome for outcome in outcomes if isinstance(outcome, Exception)], outcomes
    assert [charge["amount"] for charge in stripe.charges] == [1900]
    subscription.refresh_from_db()
    assert subscription.status == "active"
    assert ledger_is_consistent()


# Refunds issued by staff


def staff_client(django_user_model):
    staff = role_grant(
        django_user_model.objects.create_user(
            username="finance@example.com", email="finance@example.com", password="x", is_staff=True
        ),
        "finance",
    )
    client = APIClient()
    client.credentials(**bearer(access_token_for(staff)))
    return client


@pytest.mark.parametrize("retry_with_key", [True, False], ids=["same_key", "no_key"])
@pytest.mark.parametrize("fault", ["unavailable", "drop"])
def test_a_staff_refund_failing_at_stripe_refunds_once_on_retry(stripe, django_user_model, fault, retry_with_key):
    subscription = stripe_subscriber(stripe)
    payment = PaymentTransaction.objects.get(subscription=subscription)
    payment.stripe_payment_intent_id = stripe.objects_of("payment_intent")[0]["id"]
    payment.save()
    client = staff_client(django_user_model)
    stripe.inject("POST", "refunds", fault)
    headers = {"HTTP_IDEMPOTENCY_KEY": "refund-1"} if retry_with_key else {}
    url = f"/api/v1/admin/payments/{payment.pk}/refund/"

    first = client.post(url, {"amount_usd": "50.00", "reason": "Goodwill"}, format="json", **headers)
    again = client.post(url, {"amount_usd": "50.00", "reason": "Goodwill"}, format="json", **headers)

    assert first.status_code == 503, first.content
    assert again.status_code == 200, again.content
    assert again.json()["state"] == "succeeded"
    (refund,) = stripe.objects_of("refund")
    assert refund["amount"] == 5000
    payment.refresh_from_db()
    assert (payment.refunded_amount_usd, payment.status) == (Decimal("50.00"), "partially_refunded")
    assert PaymentEvent.objects.filter(event_type="refund_issued").count() == 1


# reconcile_payments and the console


def test_reconcile_payments_lists_stuck_operations_and_fixes_them(stripe):
    subscription = stripe_subscriber(stripe)
    stripe.pay_mode = "async"
    assert change_tier(subscription).status_code == 202
    operation = PaymentOperation.objects.get(kind=OperationKind.UPGRADE_CHARGE)
    out = StringIO()

    call_command("reconcile_payments", stdout=out)

    assert f"{operation.pk} upgrade_charge submitted" in out.getvalue()
    assert "1 operation(s) waiting on the provider or needing attention." in out.getvalue()

    stripe.async_payment_settle(operation.stripe_invoice_id, succeeded=True)
    with time_machine.travel(timezone.now() + LATER):
        out = StringIO()
        call_command("reconcile_payments", "--fix", stdout=out, stderr=StringIO())

    assert "Settled (succeeded: 1)." in out.getvalue()
    assert "0 operation(s)" in out.getvalue()
    subscription.refresh_from_db()
    assert subscription.tier == "enterprise_max"


def test_reconcile_payments_exits_non_zero_while_an_operation_needs_attention(stripe):
    subscription = stripe_subscriber(stripe)
    stripe.pay_mode = "async"
    change_tier(subscription)
    PaymentOperation.objects.filter(kind=OperationKind.UPGRADE_CHARGE).update(
        state=OperationState.NEEDS_ATTENTION, last_error="Paid after it failed."
    )

    with pytest.raises(CommandError, match="1 operation"):
        call_command("reconcile_payments", stdout=StringIO())


def test_the_console_lists_operations_needing_a_look(stripe, admin_client):
    subscription = stripe_subscriber(stripe)
    stripe.pay_mode = "async"
    change_tier(subscription)

    page = admin_client.get("/admin/payments/paymentoperation/", {"stuck": "yes"})

    assert page.status_code == 200
    assert b"upgrade_charge" in page.content
    assert b"submitted" in page.content


@pytest.mark.parametrize("fault", ["unavailable", "drop", "hang"])
def test_a_dunning_retry_failing_at_pay_is_resumed_by_the_next_pass_and_charged_once(stripe, settings, fault):
    # given: a Stripe renewal invoice that failed, retried a day later while Stripe fails once
    settings.STRIPE_READ_TIMEOUT_SECONDS = 0.5
    subscription = stripe_subscriber(stripe)
    stripe.invoice_open("in_overdue", customer=subscription.stripe_customer_id, amount=14_900)
    with time_machine.travel(subscription.current_period_end + timedelta(hours=1), tick=False):
        _renewal_failed(subscription, "in_overdue")
    stripe.inject("POST", "invoices/in_overdue/pay", fault, seconds=1.0)
    retry_at = subscription.current_period_end + timedelta(days=1, hours=1)

    with time_machine.travel(retry_at, tick=False):
        assert dunning_run() == {"retry_deferred": 1}
    if fault == "hang":
        time.sleep(1.2)
    with time_machine.travel(retry_at + timedelta(hours=1), tick=False):
        assert dunning_run() == {"retry_succeeded": 1}
        assert dunning_run() == {}

    assert stripe.charges == [{"invoice": "in_overdue", "amount": 14_900}]
    subscription.refresh_from_db()
    assert subscription.status == "active"
    assert DunningAttempt.objects.get(attempt_number=1).result == "succeeded"
    assert ledger_is_consistent()


def test_a_dunning_retry_paid_but_not_committed_is_settled_once_by_the_next_pass(stripe, fail_inserts_into):
    subscription = stripe_subscriber(stripe)
    stripe.invoice_open("in_overdue", customer=subscription.stripe_customer_id, amount=14_900)
    with time_machine.travel(subscription.current_period_end + timedelta(hours=1), tick=False):
        _renewal_failed(subscription, "in_overdue")
    retry_at = subscription.current_period_end + timedelta(days=1, hours=1)
    lift = fail_inserts_into("payments_paymentevent")

    with time_machine.travel(retry_at, tick=False):
        assert dunning_run() == {"failed": 1}
    lift()
    with time_machine.travel(retry_at + timedelta(hours=1), tick=False):
        assert dunning_run() == {"retry_succeeded": 1}

    assert stripe.charges == [{"invoice": "in_overdue", "amount": 14_900}]
    subscription.refresh_from_db()
    assert subscription.status == "active"


def test_a_paid_checkout_whose_webhook_fails_before_commit_is_applied_once_at_redelivery(stripe, fail_inserts_into):
    user = customer("buyer@example.com")
    session_id = start(user).json()["checkout"]["session_id"]
    paid = stripe.checkout_complete(session_id)
    lift = fail_inserts_into("payments_paymentevent")

    first, _ = deliver_event("checkout.session.completed", paid, event_id="evt_paid")
    assert first.status == "failed"  # answered 500: Stripe delivers it again
    assert not Subscription.objects.filter(user=user, tier="enterprise_pro").exists()
    lift()
    again, _ = deliver_event("checkout.session.completed", paid, event_id="evt_paid")

    assert again.status == "processed"
    assert Subscription.objects.filter(user=user, tier="enterprise_pro").count() == 1
    assert [charge["amount"] for charge in stripe.charges] == [14_900]
    assert PaymentEvent.objects.filter(event_type="checkout_completed").count() == 1
