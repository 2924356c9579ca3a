"""`manage.py reconcile_stripe` against the Stripe emulator (real commits; on PostgreSQL, a watch that
no Stripe call is made inside a transaction): differences planted on Stripe's side are each found
and reported, `--fix` applies them through the webhook handlers, and a second run finds nothing."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from payments import registry
from payments.models import Payment, WebhookEvent, WebhookStatus
from payments.services.operations import invoice_facts
from payments.tests.conftest import stripe_subscriber
from payments.tests.helpers import deliver_event
from subscriptions import tasks
from subscriptions.models import BillingInvoice, PaymentStatus, PaymentTransaction, Subscription
from subscriptions.services import reconcile

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tier_catalog")]


@pytest.fixture
def emulator(stripe_http):
    """The Stripe emulator, watching (on PostgreSQL) that no connection of ours sits inside a
    transaction while a request to Stripe is answered."""
    if connection.vendor == "postgresql":
        stripe_http.watch_transactions(connection.settings_dict["NAME"])
    yield stripe_http
    assert stripe_http.state.transaction_violations == [], "a Stripe call was made inside a transaction"


def reconcile_stripe(*arguments) -> tuple[list[str], int]:
    """The command's output lines and its exit code."""
    out = StringIO()
    try:
        call_command(
            "reconcile_stripe",
            "--since",
            (timezone.now() - timedelta(days=1)).date().isoformat(),
            *arguments,
            stdout=out,
        )
        code = 0
    except CommandError as error:
        code = error.returncode
    return out.getvalue().splitlines(), code


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def whole(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat()


def payment_of(subscription: Subscription) -> PaymentTransaction:
    return PaymentTransaction.objects.get(subscription=subscription)


def charge_of(emulator, subscription: Subscription) -> dict:
    """The card charge behind the subscription's first payment, whose payment we hold by the payment
    intent of its Stripe invoice."""
    payment = payment_of(subscription)
    intent = invoice_facts(emulator.object(payment.invoice.stripe_invoice_id))["payment_intent_id"]
    PaymentTransaction.objects.filter(pk=payment.pk).update(stripe_payment_intent_id=intent)
    Payment.objects.filter(stripe_invoice_id=payment.invoice.stripe_invoice_id).update(stripe_payment_intent_id=intent)
    return emulator.charge_add(intent, amount=int(payment.amount_usd * 100), customer=subscription.stripe_customer_id)


def test_reconcile_finds_each_difference_planted_at_stripe_and_fix_applies_them_through_the_handlers(
    emulator, monkeypatch
):
    monkeypatch.setattr(reconcile, "PAGE_SIZE", 2)  # every list takes several pages
    cancelled = stripe_subscriber(emulator, "cancelled@example.com")
    moved = stripe_subscriber(emulator, "moved@example.com")
    collected = stripe_subscriber(emulator, "collected@example.com")
    partly = stripe_subscriber(emulator, "partly@example.com")
    refunded = stripe_subscriber(emulator, "refunded@example.com")
    agreeing = stripe_subscriber(emulator, "agreeing@example.com")
    first_invoices = {
        subscription.pk: BillingInvoice.objects.get(subscription=subscription)
        for subscription in (cancelled, moved, collected, partly, refunded, agreeing)
    }
    # given: Stripe's side changed, and the webhooks telling us never arrived
    emulator.subscription_cancel(cancelled.stripe_subscription_id)
    renewal = emulator.subscription_renew(moved.stripe_subscription_id)
    late = emulator.subscription_renew(collected.stripe_subscription_id, paid=False)
    assert deliver_event("invoice.payment_failed", late)[0].status == WebhookStatus.PROCESSED
    emulator.async_payment_settle(late["id"], succeeded=True)
    partial_charge = charge_of(emulator, partly)
    emulator.refund_add(partial_charge["id"], amount=500)
    assert deliver_event("charge.refunded", json.loads(json.dumps(partial_charge)))[0].status == "processed"
    emulator.refund_add(partial_charge["id"], amount=500)
    full_charge = charge_of(emulator, refunded)
    # Most of the payment, not all: a full refund would also end the subscription here (the refund
    # policy), whose cancellation reaches Stripe only after the command's transactions commit.
    emulator.refund_add(full_charge["id"], amount=full_charge["amount"] - 100)
    moved_item = emulator.object(moved.stripe_subscription_id)["items"]["data"][0]
    collected_item = emulator.object(collected.stripe_subscription_id)["items"]["data"][0]
    amount = int(refunded.base_price_usd * 100) - 100

    # when
    lines, code = reconcile_stripe()

    # then
    assert code == 1
    differences = [line for line in lines[:-1] if " documents: " not in line]
    assert sorted(differences) == sorted(
        [
            f"subscription {cancelled.stripe_subscription_id} status: here active, at Stripe canceled",
            f"subscription {moved.stripe_subscription_id} period: here "
            f"{whole(moved.current_period_start)} to {whole(moved.current_period_end)}, at Stripe "
            f"{at(moved_item['current_period_start']).isoformat()} to "
            f"{at(moved_item['current_period_end']).isoformat()}",
            f"subscription {collected.stripe_subscription_id} status: here past_due, at Stripe active",
            f"subscription {collected.stripe_subscription_id} period: here "
            f"{whole(collected.current_period_start)} to {whole(collected.current_period_end)}, at Stripe "
            f"{at(collected_item['current_period_start']).isoformat()} to "
            f"{at(collected_item['current_period_end']).isoformat()}",
            f"invoice {renewal['id']} status: here not recorded, at Stripe paid "
            f"{Decimal(renewal['amount_due']) / 100:.2f} USD",
            f"invoice {late['id']} status: here open, at Stripe paid",
            f"charge {partial_charge['id']} amount_refunded: here 5.00 USD, at Stripe 10.00 USD",
            f"charge {full_charge['id']} amount_refunded: here 0.00 USD, at Stripe {Decimal(amount) / 100:.2f} USD",
        ]
    )
    documents = [line for line in lines if " documents: " in line]
    assert sorted(documents) == sorted(
        f"invoice {invoice.stripe_invoice_id} documents: here number -, hosted_invoice_url -, invoice_pdf -, "
        f"at Stripe number {emulator.object(invoice.stripe_invoice_id)['number']}, "
        f"hosted_invoice_url {emulator.object(invoice.stripe_invoice_id)['hosted_invoice_url']}, "
        f"invoice_pdf {emulator.object(invoice.stripe_invoice_id)['invoice_pdf']}"
        for invoice in [*first_invoices.values(), BillingInvoice.objects.get(stripe_invoice_id=late["id"])]
        if not invoice.number
    )
    assert lines[-1].startswith("Compared 6 subscriptions, 8 invoices, 2 refunded charges, 0 disputes since ")
    assert lines[-1].endswith(f": {len(differences) + len(documents)} difference(s).")
    assert any("starting_after" in request["url"] for request in emulator.requests), "the lists were paged"
    assert Subscription.objects.get(pk=cancelled.pk).status == "active", "a report changes nothing"
    assert not WebhookEvent.objects.filter(event_id__startswith="reconcile:").exists()

    # when
    lines, code = reconcile_stripe("--fix")

    # then: Stripe's state, applied through the handlers as stored, audited events
    assert code == 0, "\n".join(lines)
    assert lines[-1].endswith(" 0 remaining.")
    events = WebhookEvent.objects.filter(event_id__startswith="reconcile:")
    assert sorted(events.values_list("event_type", "status")) == sorted(
        [
            ("customer.subscription.deleted", "processed"),
            ("customer.subscription.updated", "processed"),
            ("customer.subscription.updated", "processed"),
            ("invoice.paid", "processed"),
            ("invoice.paid", "processed"),
            ("charge.refunded", "processed"),
            ("charge.refunded", "processed"),
        ]
    )
    assert Subscription.objects.get(pk=cancelled.pk).status == "cancelled"
    moved.refresh_from_db()
    assert (moved.status, moved.current_period_start, moved.current_period_end) == (
        "active",
        at(moved_item["current_period_start"]),
        at(moved_item["current_period_end"]),
    )
    paid_renewal = BillingInvoice.objects.get(stripe_invoice_id=renewal["id"])
    assert (paid_renewal.status, paid_renewal.number) == ("paid", renewal["number"])
    collected.refresh_from_db()
    assert (collected.status, collected.current_period_start) == ("active", at(collected_item["current_period_start"]))
    assert BillingInvoice.objects.get(stripe_invoice_id=late["id"]).status == "paid"
    assert (payment_of(partly).refunded_amount_usd, payment_of(partly).status) == (
        Decimal("10.00"),
        PaymentStatus.PARTIALLY_REFUNDED,
    )
    assert (payment_of(refunded).refunded_amount_usd, payment_of(refunded).status) == (
        Decimal(amount) / 100,
        PaymentStatus.PARTIALLY_REFUNDED,
    )
    for invoice in first_invoices.values():
        invoice.refresh_from_db()
        assert invoice.number == emulator.object(invoice.stripe_invoice_id)["number"]
        assert invoice.invoice_pdf == emulator.object(invoice.stripe_invoice_id)["invoice_pdf"]
    assert Subscription.objects.get(pk=agreeing.pk).status == "active"

    # when: the next run
    lines, code = reconcile_stripe()

    # then
    assert (code, lines[-1].endswith(": 0 difference(s).")) == (0, True), lines
    assert len(lines) == 1


def test_reconcile_reports_an_invoice_amount_that_differs_from_stripes(emulator):
    subscription = stripe_subscriber(emulator, "amount@example.com")
    invoice = BillingInvoice.objects.get(subscription=subscription)
    BillingInvoice.objects.filter(pk=invoice.pk).update(
        amount_due_usd=Decimal("29.00"), amount_paid_usd=Decimal("29.00")
    )
    at_stripe = Decimal(emulator.object(invoice.stripe_invoice_id)["amount_paid"]) / 100

    lines, code = reconcile_stripe()

    assert code == 1
    assert f"invoice {invoice.stripe_invoice_id} amount_due: here 29.00 USD, at Stripe {at_stripe:.2f} USD" in lines
    assert f"invoice {invoice.stripe_invoice_id} amount_paid: here 29.00 USD, at Stripe {at_stripe:.2f} USD" in lines


def test_reconcile_reports_a_subscription_stripe_bills_that_is_not_recorded_here_and_leaves_it_to_staff(emulator):
    emulator.subscription_add("sub_unknown_here", customer="cus_unknown_here")

    lines, code = reconcile_stripe("--fix")

    assert code == 1
    assert (
        "subscription sub_unknown_here status: here not recorded, at Stripe active (customer cus_unknown_here)" in lines
    )
    assert not WebhookEvent.objects.filter(event_id__startswith="reconcile:").exists()
    assert lines[-1].endswith("0 event(s) applied, 1 remaining.")


def test_a_dispute_is_compared_with_the_newest_dispute_event_applied_and_fix_passes_it_to_the_handlers(
    emulator, monkeypatch
):
    subscription = stripe_subscriber(emulator, "disputed@example.com")
    charge = charge_of(emulator, subscription)
    dispute = emulator.dispute_add(charge["id"], status="needs_response")
    applied = []

    def dispute_handler(row):
        applied.append((row.event_type, row.payload["data"]["object"]["status"]))
        return {"action": "dispute_recorded"}

    for event_type in reconcile.DISPUTE_EVENTS:
        monkeypatch.setitem(registry._event_handlers, event_type, [dispute_handler])
    assert deliver_event("charge.dispute.created", dict(dispute))[0].status == "processed"
    emulator.object(dispute["id"])["status"] = "lost"

    lines, code = reconcile_stripe("--fix")

    assert f"dispute {dispute['id']} status: here needs_response, at Stripe lost" in lines
    assert applied == [("charge.dispute.created", "needs_response"), ("charge.dispute.closed", "lost")]
    assert not any(line.startswith("still differs: dispute") for line in lines)
    again, _ = reconcile_stripe()
    assert not any(line.startswith("dispute ") for line in again)


def test_reconcile_applies_nothing_when_stripe_cannot_be_read(emulator):
    subscription = stripe_subscriber(emulator, "unread@example.com")
    emulator.subscription_cancel(subscription.stripe_subscription_id)
    emulator.inject("GET", "invoices", "unavailable")

    with pytest.raises(CommandError, match="Stripe could not be read"):
        call_command("reconcile_stripe", "--fix", stdout=StringIO())

    assert Subscription.objects.get(pk=subscription.pk).status == "active"
    assert not WebhookEvent.objects.filter(event_id__startswith="reconcile:").exists()


def test_the_daily_job_applies_stripes_state(emulator):
    subscription = stripe_subscriber(emulator, "daily@example.com")
    emulator.subscription_cancel(subscription.stripe_subscription_id)

    outcome = tasks.reconcile_stripe.delay().get()

    assert outcome["remaining"] == 0
    assert Subscription.objects.get(pk=subscription.pk).status == "cancelled"
