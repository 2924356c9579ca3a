"""Moving WebhookEvent (from subscriptions) and PaymentEvent (from audit) into payments keeps every row,
their links, their content types (permissions and object history) and the customers subscriptions knew."""

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BEFORE = [("payments", None)]


def migrate(targets=None):
    """Migrates to `targets` (every app's latest without) and returns the models as they are there."""
    executor = MigrationExecutor(connection)
    return executor.migrate(targets or executor.loader.graph.leaf_nodes()).apps


@pytest.fixture
def before_the_move():
    old = migrate(BEFORE)
    yield old
    migrate()  # whatever the test did, the database ends at the latest schema


def test_the_move_keeps_every_row_and_link(before_the_move):
    old = before_the_move
    user = old.get_model("auth", "User").objects.create(username="kept@example.com", email="kept@example.com")
    event = old.get_model("subscriptions", "WebhookEvent").objects.create(
        event_id="evt_kept", event_type="invoice.paid", payload={"id": "evt_kept"}, status="processed"
    )
    old.get_model("audit", "PaymentEvent").objects.create(
        id=uuid.uuid4(), user_id=user.pk, event_type="invoice_paid", amount=1900, currency="usd", webhook_event=event
    )
    old.get_model("subscriptions", "Subscription").objects.create(
        user_id=user.pk,
        tier="pro",
        billing_cycle="monthly",
        status="active",
        base_price_usd=19,
        monthly_credit_allocation=20_000,
        current_period_start="2026-01-01T00:00:00Z",
        current_period_end="2026-02-01T00:00:00Z",
        stripe_customer_id="cus_kept",
    )
    content_types = old.get_model("contenttypes", "ContentType")
    webhook_type = content_types.objects.get_or_create(app_label="subscriptions", model="webhookevent")[0]

    new = migrate()

    moved = new.get_model("payments", "WebhookEvent").objects.get(event_id="evt_kept")
    assert (moved.pk, moved.status, moved.raw_body) == (event.pk, "processed", "")
    payment_event = new.get_model("payments", "PaymentEvent").objects.get()
    assert (payment_event.user_id, payment_event.amount, payment_event.webhook_event_id) == (user.pk, 1900, event.pk)
    assert new.get_model("payments", "StripeCustomer").objects.get().stripe_customer_id == "cus_kept"
    relabelled = new.get_model("contenttypes", "ContentType").objects.get(pk=webhook_type.pk)
    assert (relabelled.app_label, relabelled.model) == ("payments", "webhookevent")
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'payments_paymentevent'::regclass")
        assert ("payments_paymentevent_append_only",) in cursor.fetchall()


def _body_compression() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = 'payments_webhookevent'::regclass "
            "AND attname IN ('payload', 'raw_body')"
        )
        return dict(cursor.fetchall())


def test_a_stripe_events_body_is_stored_with_lz4_and_the_reversal_restores_the_default():
    assert _body_compression() == {"payload": "l", "raw_body": "l"}
    try:
        migrate([("payments", "0006_credit_operation_kinds")])
        assert _body_compression() == {"payload": "", "raw_body": ""}
    finally:
        migrate()
    assert _body_compression() == {"payload": "l", "raw_body": "l"}
