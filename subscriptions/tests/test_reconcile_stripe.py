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

from audit.models import AdminAuditLog, AuditAction
from payments.models import OperationKind, Payment, PaymentEvent, PaymentOperation, WebhookEvent, WebhookStatus
from payments.services.operations import invoice_facts
from payments.tests.conftest import client_for, stripe_subscriber
from payments.tests.helpers import deliver_event
from payments.tests.webhook_flows import license_bought
from subscriptions import tasks
from subscriptions.models import BillingInvoice, PaymentStatus, PaymentTransaction, Subscription
from subscriptions.services import reconcile

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tier_catalog")]


@pytest.fixture
def emulator(stripe_http):
    """The Stripe emulator, watching (on PostgreSQL) that no connection of ours sits inside a
    transaction while a request to Stripe is answered."""
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


def received_of(subscription: Subscription) -> Payment:
    """The payment received for the subscription's first invoice (what refunds and disputes match)."""
    return Payment.objects.get(stripe_invoice_id=payment_of(subscription).invoice.stripe_invoice_id)


def charge_of(emulator, subscription: Subscription) -> dict:
    """The card charge behind the subscription's first payment, whose payment we hold by the payment
    intent of its Stripe invoice."""
    payment = payment_of(subscription)
    intent = invoice_facts(emulator.object(payment.invoice.stripe_invoice_id))["payment_intent_id"]
    PaymentTransaction.objects.filter(pk=payment.pk).update(stripe_payment_intent_id=intent)
    Payment.objects.filter(stripe_invoice_id=payment.invoice.stripe_invoice_id).update(stripe_payment_intent_id=intent)
    return emulator.charge_add(intent, amount=payment.amount, customer=subscription.stripe_customer_id)


def charge_only_of(emulator, subscription: Subscription) -> dict:
    """A charge with no payment intent behind the subscription's first payment, which we hold by
    the charge's id alone."""
    payment = payment_of(subscription)
    charge = emulator.charge_add(None, amount=payment.amount, customer=subscription.stripe_customer_id)
    Payment.objects.filter(stripe_invoice_id=payment.invoice.stripe_invoice_id).update(
        stripe_charge_id=charge["id"], stripe_payment_intent_id=""
    )
    return charge


def amount_changed_at_stripe(emulator, invoice_id: str, amount: int) -> None:
    """What Stripe charged for the invoice is not what we recorded (a discount we never saw)."""
    invoice = emulator.object(invoice_id)
    invoice.update(amount_due=amount, amount_paid=amount, total=amount, subtotal=amount)
    invoice["payments"]["data"][0].update(amount_paid=amount, amount_requested=amount)


def money_events() -> list[tuple]:
    return sorted(PaymentEvent.objects.exclude(amount=None).values_list("event_type", "invoice_id", "amount"))


def test_reconcile_finds_each_difference_planted_at_stripe_and_fix_applies_them_through_the_handlers(
    emulator, monkeypatch
):
    monkeypatch.setattr(reconcile, "PAGE_SIZE", 2)  # every list takes several pages
    cancelled = stripe_subscriber(emulator, "cancelled@example.com")
    moved = stripe_subscriber(emulator, "moved@example.com")
    collected = stripe_subscriber(emulator, "collected@example.com")
    discounted = stripe_subscriber(emulator, "discounted@example.com")
    partly = stripe_subscriber(emulator, "partly@example.com")
    refunded = stripe_subscriber(emulator, "refunded@example.com")
    opened = stripe_subscriber(emulator, "opened@example.com")
    won = stripe_subscriber(emulator, "won@example.com")
    lost = stripe_subscriber(emulator, "lost@example.com")
    agreeing = stripe_subscriber(emulator, "agreeing@example.com")
    subscribers = (cancelled, moved, collected, discounted, partly, refunded, opened, won, lost, agreeing)
    first_invoices = {
        subscription.pk: BillingInvoice.objects.get(subscription=subscription) for subscription in subscribers
    }
    price = payment_of(agreeing).amount
    # given: Stripe's side changed, and the webhooks telling us never arrived
    emulator.subscription_cancel(cancelled.stripe_subscription_id)
    renewal = emulator.subscription_renew(moved.stripe_subscription_id)
    late = emulator.subscription_renew(collected.stripe_subscription_id, paid=False)
    assert deliver_event("invoice.payment_failed", late)[0].status == WebhookStatus.PROCESSED
    emulator.async_payment_settle(late["id"], succeeded=True)
    discounted_invoice = first_invoices[discounted.pk].stripe_invoice_id
    amount_changed_at_stripe(emulator, discounted_invoice, price - 1000)
    partial_charge = charge_of(emulator, partly)
    emulator.refund_add(partial_charge["id"], amount=500)
    assert deliver_event("charge.refunded", json.loads(json.dumps(partial_charge)))[0].status == "processed"
    emulator.refund_add(partial_charge["id"], amount=500)
    full_charge = charge_only_of(emulator, refunded)
    emulator.refund_add(full_charge["id"], amount=full_charge["amount"])
    opened_dispute = emulator.dispute_add(charge_of(emulator, opened)["id"])
    won_dispute = emulator.dispute_add(charge_of(emulator, won)["id"])
    lost_dispute = emulator.dispute_add(charge_of(emulator, lost)["id"])
    for dispute in (won_dispute, lost_dispute):
        assert deliver_event("charge.dispute.created", dict(dispute))[0].status == "processed"
    emulator.object(won_dispute["id"])["status"] = "won"
    emulator.object(lost_dispute["id"])["status"] = "lost"
    assert {Subscription.objects.get(pk=won.pk).status, Subscription.objects.get(pk=lost.pk).status} == {"suspended"}
    moved_item = emulator.object(moved.stripe_subscription_id)["items"]["data"][0]
    collected_item = emulator.object(collected.stripe_subscription_id)["items"]["data"][0]
    money_before = money_events()

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
            f"invoice {discounted_invoice} amount_due: here {usd(price)}, at Stripe {usd(price - 1000)}",
            f"invoice {discounted_invoice} amount_paid: here {usd(price)}, at Stripe {usd(price - 1000)}",
            f"charge {partial_charge['id']} amount_refunded: here 5.00 USD, at Stripe 10.00 USD",
            f"charge {full_charge['id']} amount_refunded: here 0.00 USD, at Stripe {usd(price)}",
            f"dispute {opened_dispute['id']} status: here not recorded, at Stripe needs_response",
            f"dispute {won_dispute['id']} status: here open, at Stripe won",
            f"dispute {lost_dispute['id']} status: here open, at Stripe lost",
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
    assert lines[-1].startswith("Compared 10 subscriptions, 12 invoices, 2 refunded charges, 3 disputes since ")
    assert lines[-1].endswith(f": {len(differences) + len(documents)} difference(s).")
    assert any("starting_after" in request["url"] for request in emulator.requests), "the lists were paged"
    assert not emulator.calls("GET", r"charges/.+"), "the refunded charges came with the refunds' pages"
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
            ("invoice.paid", "processed"),
            ("charge.refunded", "processed"),
            ("charge.refunded", "processed"),
            ("charge.dispute.created", "processed"),
            ("charge.dispute.closed", "processed"),
            ("charge.dispute.closed", "processed"),
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
    # the amount Stripe charged, on the invoice and its payments; no money moved, so no payment event
    invoice = BillingInvoice.objects.get(stripe_invoice_id=discounted_invoice)
    assert (invoice.amount_due, invoice.amount_paid, invoice.amount_paid_usd) == (
        price - 1000,
        price - 1000,
        Decimal(price - 1000) / 100,
    )
    assert (payment_of(discounted).amount, received_of(discounted).amount) == (price - 1000, price - 1000)
    assert [event for event in money_events() if event[1] == discounted_invoice] == [
        event for event in money_before if event[1] == discounted_invoice
    ]
    assert (received_of(partly).amount_refunded, payment_of(partly).status) == (1000, PaymentStatus.PARTIALLY_REFUNDED)
    # the full refund of a charge known by its id alone ends the paid access, here and at Stripe
    assert (received_of(refunded).amount_refunded, payment_of(refunded).status) == (price, PaymentStatus.REFUNDED)
    assert Subscription.objects.get(pk=refunded.pk).status == "cancelled"
    assert emulator.object(refunded.stripe_subscription_id)["status"] == "canceled"
    # an open dispute suspends the access, won restores it, lost ends it as a full refund
    assert (received_of(opened).dispute_status, Subscription.objects.get(pk=opened.pk).status) == ("open", "suspended")
    assert (received_of(won).dispute_status, Subscription.objects.get(pk=won.pk).status) == ("won", "active")
    assert (received_of(lost).dispute_status, Subscription.objects.get(pk=lost.pk).status) == ("lost", "cancelled")
    assert emulator.object(lost.stripe_subscription_id)["status"] == "canceled"
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


def usd(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f} USD"


def test_an_invoice_amount_is_not_corrected_under_refunds_already_recorded_and_stays_for_staff(emulator):
    subscription = stripe_subscriber(emulator, "refunded-first@example.com")
    invoice = BillingInvoice.objects.get(subscription=subscription)
    charge = charge_of(emulator, subscription)
    emulator.refund_add(charge["id"], amount=500)
    assert deliver_event("charge.refunded", json.loads(json.dumps(charge)))[0].status == "processed"
    price = payment_of(subscription).amount
    amount_changed_at_stripe(emulator, invoice.stripe_invoice_id, price - 1000)
    difference = f"invoice {invoice.stripe_invoice_id} amount_paid: here {usd(price)}, at Stripe {usd(price - 1000)}"

    lines, code = reconcile_stripe("--fix")

    assert code == 1
    assert f"still differs: {difference}" in lines
    invoice.refresh_from_db()
    assert (invoice.amount_paid, payment_of(subscription).amount, received_of(subscription).amount) == (
        price,
        price,
        price,
    )


def upgraded(emulator, email: str) -> tuple[Subscription, BillingInvoice]:
    """A Stripe subscriber who upgraded: the prorated difference charged on an invoice of its own."""
    subscription = stripe_subscriber(emulator, email)
    changed = client_for(subscription.user).post(
        f"/api/v1/subscriptions/{subscription.pk}/change-tier/", {"tier": "enterprise_max"}, format="json"
    )
    assert changed.status_code == 200, changed.content
    operation = PaymentOperation.objects.get(kind=OperationKind.UPGRADE_CHARGE, subject_id=str(subscription.pk))
    assert operation.stripe_objects["owns_invoice"]
    return subscription, BillingInvoice.objects.get(stripe_invoice_id=operation.stripe_invoice_id)


def test_the_amounts_of_an_invoice_our_own_charge_made_are_corrected_by_fix_through_its_operation(emulator):
    # given: an upgrade's charge, for which Stripe took less than we recorded (a customer balance)
    subscription, invoice = upgraded(emulator, "upgraded@example.com")
    charged = invoice.amount_paid
    amount_changed_at_stripe(emulator, invoice.stripe_invoice_id, charged - 100)
    money_before = money_events()

    lines, code = reconcile_stripe()

    assert code == 1
    assert f"invoice {invoice.stripe_invoice_id} amount_paid: here {usd(charged)}, at Stripe {usd(charged - 100)}" in (
        lines
    )

    # when
    lines, code = reconcile_stripe("--fix")

    # then: corrected on the invoice, its payment and the money received, audited; no money moved
    assert code == 0, lines
    applied = WebhookEvent.objects.get(event_id__startswith=f"reconcile:{invoice.stripe_invoice_id}:")
    assert applied.result["action"] == "operation_settled"
    assert applied.result["amounts_corrected"] == {
        "amount_due": [charged, charged - 100],
        "amount_paid": [charged, charged - 100],
    }
    invoice.refresh_from_db()
    assert (invoice.amount_due, invoice.amount_paid, invoice.amount_paid_usd) == (
        charged - 100,
        charged - 100,
        Decimal(charged - 100) / 100,
    )
    assert invoice.number == emulator.object(invoice.stripe_invoice_id)["number"]
    assert PaymentTransaction.objects.get(invoice=invoice).amount == charged - 100
    assert Payment.objects.get(stripe_invoice_id=invoice.stripe_invoice_id).amount == charged - 100
    assert money_events() == money_before
    assert AdminAuditLog.objects.filter(
        resource_type="subscriptions.billinginvoice",
        resource_id=str(invoice.pk),
        action=AuditAction.UPDATE,
        previous_value__amount_paid=charged,
        new_value__amount_paid=charged - 100,
    ).exists()
    assert reconcile_stripe()[1] == 0


def test_the_amounts_of_our_own_charges_invoice_stay_under_refunds_recorded_on_the_money_received(emulator):
    # given: an upgrade's charge partly refunded (recorded on the money received only), then another amount at Stripe
    subscription, invoice = upgraded(emulator, "upgraded-refunded@example.com")
    charged = invoice.amount_paid
    received = Payment.objects.get(stripe_invoice_id=invoice.stripe_invoice_id)
    charge = emulator.charge_add(received.stripe_payment_intent_id, amount=charged)
    emulator.refund_add(charge["id"], amount=100)
    assert deliver_event("charge.refunded", json.loads(json.dumps(charge)))[0].status == "processed"
    amount_changed_at_stripe(emulator, invoice.stripe_invoice_id, charged - 100)

    lines, code = reconcile_stripe("--fix")

    assert code == 1
    difference = f"invoice {invoice.stripe_invoice_id} amount_paid: here {usd(charged)}, at Stripe {usd(charged - 100)}"
    assert f"still differs: {difference}" in lines
    invoice.refresh_from_db()
    assert (invoice.amount_paid, PaymentTransaction.objects.get(invoice=invoice).amount) == (charged, charged)
    received.refresh_from_db()
    assert (received.amount, received.amount_refunded) == (charged, 100)


def test_a_license_refunded_at_stripe_is_found_and_fix_revokes_it(emulator, api_client):
    license_, payment = license_bought(emulator, api_client, "license@example.com")
    charge = emulator.charge_add(payment.stripe_payment_intent_id, amount=payment.amount)
    emulator.refund_add(charge["id"], amount=payment.amount)

    lines, code = reconcile_stripe()

    assert code == 1
    assert f"charge {charge['id']} amount_refunded: here 0.00 USD, at Stripe {usd(payment.amount)}" in lines

    lines, code = reconcile_stripe("--fix")

    assert code == 0, lines
    license_.refresh_from_db()
    payment.refresh_from_db()
    assert (license_.status, payment.status, payment.amount_refunded) == ("revoked", "refunded", payment.amount)
    assert reconcile_stripe()[1] == 0


def test_an_invoice_recorded_in_another_currency_than_stripes_is_corrected_by_fix(emulator):
    subscription = stripe_subscriber(emulator, "euro@example.com")
    invoice = BillingInvoice.objects.get(subscription=subscription)
    price = invoice.amount_due
    emulator.object(invoice.stripe_invoice_id)["currency"] = "eur"

    lines, code = reconcile_stripe()

    assert code == 1
    money = f"{Decimal(price) / 100:.2f}"
    assert f"invoice {invoice.stripe_invoice_id} amount_due: here {money} USD, at Stripe {money} EUR" in lines

    lines, code = reconcile_stripe("--fix")

    assert code == 0, lines
    invoice.refresh_from_db()
    assert (invoice.currency, invoice.amount_paid) == ("eur", price)
    assert (payment_of(subscription).currency, received_of(subscription).currency) == ("eur", "eur")
    assert reconcile_stripe()[1] == 0


def test_a_dispute_stripe_prevented_is_fixed_as_won_without_suspending_and_an_appeal_of_a_lost_one_is_not_reported(
    emulator,
):
    # given: a chargeback the card network prevented, and a lost dispute (applied here) Stripe shows under appeal
    prevented = stripe_subscriber(emulator, "prevented@example.com")
    appealed = stripe_subscriber(emulator, "appealed@example.com")
    prevented_dispute = emulator.dispute_add(charge_of(emulator, prevented)["id"], status="prevented")
    appealed_dispute = emulator.dispute_add(charge_of(emulator, appealed)["id"], status="lost")
    assert deliver_event("charge.dispute.closed", dict(appealed_dispute))[0].status == "processed"
    emulator.object(appealed_dispute["id"])["status"] = "appeal_needs_response"
    money_before = money_events()

    lines, code = reconcile_stripe()

    assert code == 1
    assert [line for line in lines[:-1] if line.startswith("dispute ")] == [
        f"dispute {prevented_dispute['id']} status: here not recorded, at Stripe prevented"
    ]

    lines, code = reconcile_stripe("--fix")

    assert code == 0, lines
    assert (received_of(prevented).dispute_status, Subscription.objects.get(pk=prevented.pk).status) == (
        "won",
        "active",
    )
    assert (received_of(appealed).dispute_status, Subscription.objects.get(pk=appealed.pk).status) == (
        "lost",
        "cancelled",
    )
    assert money_events() == money_before
    assert reconcile_stripe()[1] == 0


def test_reconcile_reports_a_subscription_stripe_bills_that_is_not_recorded_here_and_leaves_it_to_staff(emulator):
    emulator.subscription_add("sub_unknown_here", customer="cus_unknown_here")

    lines, code = reconcile_stripe("--fix")

    assert code == 1
    assert (
        "subscription sub_unknown_here status: here not recorded, at Stripe active (customer cus_unknown_here)" in lines
    )
    assert not WebhookEvent.objects.filter(event_id__startswith="reconcile:").exists()
    assert lines[-1].endswith("0 event(s) applied, 1 remaining.")


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
