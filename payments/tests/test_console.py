"""Payments in the console: refunds and settling operations are actions that call the services."""

from decimal import Decimal

import pytest
from django.urls import reverse

from audit.models import AdminAuditLog, AuditAction
from payments.models import OperationKind, Payment, PaymentEvent, PaymentOperation
from payments.tests.conftest import client_for
from subscriptions.models import PaymentTransaction, ProrationEvent, Subscription
from subscriptions.services import account_register, subscription_start, tier_catalog_seed

pytestmark = pytest.mark.django_db

PAYMENTS = reverse("admin:subscriptions_paymenttransaction_changelist")
OPERATIONS = reverse("admin:payments_paymentoperation_changelist")


def run_action(admin_client, changelist: str, action: str, objects, **fields):
    return admin_client.post(
        changelist,
        {"action": action, "_selected_action": [str(obj.pk) for obj in objects], "apply": "1", **fields},
        follow=True,
    )


@pytest.fixture
def paid():
    """A payment of 1,490.00 for Enterprise Pro (annual), through the offline provider."""
    tier_catalog_seed()
    user = account_register(email="payer@example.com", password="correct horse battery staple")
    subscription_start(user=user, tier="enterprise_pro", billing_cycle="annual")
    return PaymentTransaction.objects.get(user=user)


def test_the_refund_action_refunds_part_of_a_payment_once_and_audits_it(admin_client, admin_user, paid):
    response = run_action(
        admin_client, PAYMENTS, "refund_payments", [paid], amount_usd="490.00", reason="Goodwill after an outage"
    )

    assert response.status_code == 200
    paid.refresh_from_db()
    assert (paid.refunded_amount_usd, paid.status) == (Decimal("490.00"), "partially_refunded")
    operation = PaymentOperation.objects.get(kind=OperationKind.REFUND)
    assert (operation.state, operation.amount, operation.description) == (
        "succeeded",
        49_000,
        "Goodwill after an outage",
    )
    assert PaymentEvent.objects.filter(event_type="refund_issued").count() == 1
    requested = AdminAuditLog.objects.get(action=AuditAction.CREATE, resource_id=str(operation.pk))
    assert (requested.actor, requested.new_value["refund_of"]) == (admin_user, str(paid.pk))
    assert AdminAuditLog.objects.filter(action=AuditAction.UPDATE, resource_id=str(paid.pk), actor=admin_user).exists()


def test_an_offline_refund_is_recorded_on_the_money_received_like_a_stripe_refund(admin_client, paid):
    run_action(admin_client, PAYMENTS, "refund_payments", [paid], amount_usd="490.00", reason="Goodwill")
    run_action(admin_client, PAYMENTS, "refund_payments", [paid], amount_usd="100.00", reason="More goodwill")

    received = Payment.objects.get(user=paid.user)
    assert (received.provider, received.amount_refunded, received.status) == ("offline", 59_000, "partially_refunded")
    operations = PaymentOperation.objects.filter(kind=OperationKind.REFUND).order_by("created_at")
    assert sorted(received.refunds) == sorted(operation.stripe_refund_id for operation in operations)
    refunds = PaymentEvent.objects.filter(event_type="refund", metadata__payment_id=str(received.pk))
    assert sorted((row.amount, row.metadata["operation_id"]) for row in refunds) == sorted(
        (operation.amount, str(operation.pk)) for operation in operations
    )
    paid.refresh_from_db()
    assert (paid.refunded_amount, paid.status) == (59_000, "partially_refunded")


def test_a_full_offline_refund_of_a_period_ends_its_paid_access_as_the_policy_says(admin_client, paid):
    run_action(admin_client, PAYMENTS, "refund_payments", [paid], reason="Cancelled on request")

    received = Payment.objects.get(user=paid.user)
    assert (received.amount_refunded, received.status) == (149_000, "refunded")
    paid.refresh_from_db()
    assert (paid.refunded_amount, paid.status) == (149_000, "refunded")
    assert Subscription.objects.get(pk=paid.subscription_id).status == "cancelled"
    assert Subscription.objects.get(user=paid.user, status="active").tier == "free"


def test_a_full_offline_refund_of_an_upgrade_puts_the_earlier_tier_back(admin_client, paid):
    changed = client_for(paid.user).post(
        f"/api/v1/subscriptions/{paid.subscription_id}/change-tier/", {"tier": "enterprise_max"}, format="json"
    )
    assert changed.status_code == 200, changed.content
    upgrade_payment = PaymentTransaction.objects.exclude(pk=paid.pk).get(user=paid.user)

    run_action(admin_client, PAYMENTS, "refund_payments", [upgrade_payment], reason="Upgrade by mistake")

    received = Payment.objects.get(kind="upgrade_charge", user=paid.user)
    assert (received.amount_refunded, received.status) == (received.amount, "refunded")
    subscription = Subscription.objects.get(pk=paid.subscription_id)
    assert (subscription.status, subscription.tier) == ("active", "enterprise_pro")
    assert ProrationEvent.objects.get(subscription=subscription).status == "reversed"


def test_a_refund_beyond_what_is_left_is_refused_and_changes_nothing(admin_client, paid):
    response = run_action(admin_client, PAYMENTS, "refund_payments", [paid], amount_usd="1490.01", reason="Too much")

    assert "Refused" in " ".join(str(message) for message in response.context["messages"])
    paid.refresh_from_db()
    assert paid.refunded_amount_usd == Decimal("0.00")
    assert not PaymentOperation.objects.filter(kind=OperationKind.REFUND).exists()


def test_a_refund_without_a_reason_is_not_run(admin_client, paid):
    response = admin_client.post(
        PAYMENTS, {"action": "refund_payments", "_selected_action": [str(paid.pk)], "apply": "1", "reason": ""}
    )

    assert response.status_code == 200  # the form again, with its error
    assert not PaymentOperation.objects.filter(kind=OperationKind.REFUND).exists()


def test_operations_are_read_only_in_the_console(admin_client, paid):
    operation = PaymentOperation.objects.get()

    page = admin_client.get(reverse("admin:payments_paymentoperation_change", args=[operation.pk]))

    assert page.status_code == 200
    assert b'name="state"' not in page.content
    assert admin_client.get(reverse("admin:payments_paymentoperation_add")).status_code == 403
