"""Keeping amounts in minor units keeps every invoice and payment, and makes each payment received
through Stripe a row that a later refund or dispute is matched to."""

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BEFORE = [("subscriptions", "0006_dunning_processing")]


def migrate(targets=None):
    executor = MigrationExecutor(connection)
    return executor.migrate(targets or executor.loader.graph.leaf_nodes()).apps


@pytest.fixture
def before_minor_units():
    old = migrate(BEFORE)
    yield old
    migrate()


def test_every_invoice_and_payment_keeps_its_amounts_in_cents(before_minor_units):
    old = before_minor_units
    user = old.get_model("auth", "User").objects.create(username="kept@example.com", email="kept@example.com")
    invoice = old.get_model("subscriptions", "BillingInvoice").objects.create(
        user_id=user.pk,
        amount_due_usd=Decimal("19.00"),
        amount_paid_usd=Decimal("19.00"),
        status="paid",
        period_start="2026-01-01T00:00:00Z",
        period_end="2026-02-01T00:00:00Z",
        stripe_invoice_id="in_kept",
    )
    payments = old.get_model("subscriptions", "PaymentTransaction")
    paid = payments.objects.create(
        user_id=user.pk,
        invoice_id=invoice.pk,
        amount_usd=Decimal("19.00"),
        refunded_amount_usd=Decimal("4.99"),
        status="partially_refunded",
        stripe_payment_intent_id="pi_kept",
        stripe_charge_id="ch_kept",
        completed_at="2026-01-01T00:00:01Z",
    )
    failed = payments.objects.create(user_id=user.pk, amount_usd=Decimal("149.00"), status="failed")

    new = migrate()

    invoice_now = new.get_model("subscriptions", "BillingInvoice").objects.get(pk=invoice.pk)
    assert (invoice_now.amount_due, invoice_now.amount_paid, invoice_now.amount_due_usd) == (
        1900,
        1900,
        Decimal("19.00"),
    )
    rows = new.get_model("subscriptions", "PaymentTransaction").objects
    assert (rows.get(pk=paid.pk).amount, rows.get(pk=paid.pk).refunded_amount) == (1900, 499)
    assert (rows.get(pk=failed.pk).amount, rows.count()) == (14900, 2)
    received = new.get_model("payments", "Payment").objects.get()
    assert (
        received.amount,
        received.amount_refunded,
        received.currency,
        received.status,
        received.stripe_payment_intent_id,
        received.stripe_charge_id,
        received.stripe_invoice_id,
    ) == (1900, 499, "usd", "partially_refunded", "pi_kept", "ch_kept", "in_kept")
