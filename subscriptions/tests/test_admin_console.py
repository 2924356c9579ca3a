import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from audit.models import AdminAuditLog, AuditAction
from billing_project.enums import SubscriptionTier
from payments.models import WebhookEvent, WebhookStatus
from subscriptions import services
from subscriptions.models import DunningAttempt, Subscription, SubscriptionStatus, UserEntitlement
from subscriptions.services import account_register, subscription_start, tier_catalog_seed
from subscriptions.tests.factories import PaymentTransactionFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

SUBSCRIPTIONS = reverse("admin:subscriptions_subscription_changelist")
WEBHOOK_EVENTS = reverse("admin:payments_webhookevent_changelist")


@pytest.fixture(autouse=True)
def catalog():
    tier_catalog_seed()


def run_action(admin_client, changelist: str, action: str, objects, **fields):
    return admin_client.post(
        changelist,
        {"action": action, "_selected_action": [str(obj.pk) for obj in objects], "apply": "1", **fields},
        follow=True,
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_status_change_action_moves_along_the_state_machine_and_audits_with_the_reason(admin_client, admin_user):
    subscriptions = SubscriptionFactory.create_batch(2, status=SubscriptionStatus.ACTIVE)

    response = run_action(
        admin_client,
        SUBSCRIPTIONS,
        "change_subscription_status",
        subscriptions,
        status=SubscriptionStatus.PAST_DUE,
        reason="card expired, customer told by phone",
    )

    assert response.status_code == 200
    assert set(Subscription.objects.values_list("status", flat=True)) == {SubscriptionStatus.PAST_DUE}
    rows = AdminAuditLog.objects.filter(action=AuditAction.TRANSITION)
    assert rows.count() == 2
    assert {row.actor for row in rows} == {admin_user}
    assert {row.new_value["reason"] for row in rows} == {"card expired, customer told by phone"}


def test_status_change_action_refuses_a_move_the_state_machine_forbids_and_changes_nothing(admin_client):
    subscription = SubscriptionFactory(status=SubscriptionStatus.ACTIVE)

    response = run_action(
        admin_client,
        SUBSCRIPTIONS,
        "change_subscription_status",
        [subscription],
        status=SubscriptionStatus.SUSPENDED,
        reason="trying",
    )

    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert any("cannot become suspended" in message for message in messages_of(response))
    assert not AdminAuditLog.objects.filter(action=AuditAction.TRANSITION).exists()


def test_status_change_action_asks_for_a_reason_first(admin_client):
    subscription = SubscriptionFactory(status=SubscriptionStatus.ACTIVE)

    response = run_action(
        admin_client, SUBSCRIPTIONS, "change_subscription_status", [subscription], status="past_due", reason=""
    )

    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.ACTIVE


def test_suspending_in_the_console_takes_the_tier_entitlements_away(admin_client):
    subscription = SubscriptionFactory(status=SubscriptionStatus.GRACE_PERIOD, tier=SubscriptionTier.PRO)

    run_action(
        admin_client, SUBSCRIPTIONS, "change_subscription_status", [subscription], status="suspended", reason="unpaid"
    )

    assert UserEntitlement.objects.get(user=subscription.user).tier == SubscriptionTier.FREE


def test_the_money_and_lifecycle_fields_are_read_only_and_a_post_changes_nothing(admin_client):
    subscription = SubscriptionFactory()
    url = reverse("admin:subscriptions_subscription_change", args=[subscription.pk])

    page = admin_client.get(url)
    admin_client.post(url, {"tier": "enterprise_max", "base_price_usd": "0.01", "status": "cancelled"})

    form = page.context["adminform"].form
    for name in ("tier", "base_price_usd", "monthly_credit_allocation", "current_period_end", "status"):
        assert name not in form.fields
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.base_price_usd, subscription.status) == ("pro", Decimal("19.00"), "active")


@pytest.mark.parametrize("model", ["subscription", "billinginvoice", "paymenttransaction", "prorationevent"])
def test_subscriptions_invoices_payments_and_proration_events_cannot_be_added_by_hand(admin_client, model):
    assert admin_client.get(reverse(f"admin:subscriptions_{model}_add")).status_code == 403


@pytest.mark.parametrize("model", ["userentitlement", "dunningattempt"])
def test_entitlements_and_dunning_attempts_cannot_be_added_changed_or_deleted_by_hand(admin_client, model):
    subscription = SubscriptionFactory(status=SubscriptionStatus.ACTIVE)
    customer = subscription.user
    services.entitlement_activate(user=customer, tier=subscription.tier)
    services.invoice_payment_failed(
        subscription=subscription,
        amount_due=1900,
        period_start=subscription.current_period_end,
        period_end_at=subscription.current_period_end + timedelta(days=30),
        reason="card declined",
    )
    row = (
        {"userentitlement": UserEntitlement, "dunningattempt": DunningAttempt}[model]
        .objects.filter(user=customer)
        .first()
    )
    change = reverse(f"admin:subscriptions_{model}_change", args=[row.pk])
    before = {field.name: getattr(row, field.name) for field in type(row)._meta.fields}

    assert admin_client.get(reverse(f"admin:subscriptions_{model}_add")).status_code == 403
    page = admin_client.get(change)
    posted = admin_client.post(change, {"tier": "enterprise_max", "result": "succeeded", "attempt_number": 9})
    deleted = admin_client.post(reverse(f"admin:subscriptions_{model}_delete", args=[row.pk]), {"post": "yes"})

    assert page.status_code == 200 and not page.context["adminform"].form.fields
    assert (posted.status_code, deleted.status_code) == (403, 403)
    row.refresh_from_db()
    assert {field.name: getattr(row, field.name) for field in type(row)._meta.fields} == before


def test_invoice_and_payment_amounts_and_status_are_read_only(admin_client):
    payment = PaymentTransactionFactory()

    invoice_form = admin_client.get(reverse("admin:subscriptions_billinginvoice_change", args=[payment.invoice.pk]))
    payment_form = admin_client.get(reverse("admin:subscriptions_paymenttransaction_change", args=[payment.pk]))

    assert not {"amount_due_usd", "amount_paid_usd", "status"} & set(invoice_form.context["adminform"].form.fields)
    assert not {"amount_usd", "refunded_amount_usd", "status"} & set(payment_form.context["adminform"].form.fields)


def test_resend_trial_reminder_action_sends_the_email_and_audits(admin_client, admin_user):
    customer = account_register(email="trialist@example.com", password="a long enough passphrase")
    trial = subscription_start(user=customer, tier=SubscriptionTier.PRO).subscription

    with TestCase.captureOnCommitCallbacks(execute=True):
        response = run_action(admin_client, SUBSCRIPTIONS, "resend_trial_reminder", [trial])

    assert response.status_code == 200
    (message,) = mail.outbox
    assert message.to == ["trialist@example.com"]
    assert "14 days" in message.subject
    assert message.alternatives[0][1] == "text/html"
    row = AdminAuditLog.objects.get(action=AuditAction.PROCESS, resource_id=str(trial.pk))
    assert (row.actor, row.new_value["email"]) == (admin_user, "trial_reminder")


def test_resend_trial_reminder_is_refused_for_a_subscription_not_in_trial(admin_client):
    subscription = SubscriptionFactory(status=SubscriptionStatus.ACTIVE)

    response = run_action(admin_client, SUBSCRIPTIONS, "resend_trial_reminder", [subscription])

    assert not mail.outbox
    assert any("Only a subscription in its trial" in message for message in messages_of(response))


def _failed_event(user) -> WebhookEvent:
    """A stored customer.subscription.updated that failed earlier and would now apply."""
    subscription = SubscriptionFactory(
        user=user, status=SubscriptionStatus.ACTIVE, stripe_subscription_id="sub_console"
    )
    payload = {
        "id": "evt_console_1",
        "type": "customer.subscription.updated",
        "created": int((timezone.now() - timedelta(minutes=5)).timestamp()),
        "data": {"object": {"id": subscription.stripe_subscription_id, "status": "past_due"}},
    }
    return WebhookEvent.objects.create(
        event_id="evt_console_1",
        event_type=payload["type"],
        payload=json.loads(json.dumps(payload)),
        status=WebhookStatus.FAILED,
        error="OperationalError: the database went away",
        attempts=1,
    )


def test_replay_action_processes_a_stored_event_again_and_audits(admin_client, admin_user, user):
    event = _failed_event(user)

    response = run_action(admin_client, WEBHOOK_EVENTS, "replay_webhook_events", [event])

    assert response.status_code == 200
    event.refresh_from_db()
    assert (event.status, event.error, event.attempts) == (WebhookStatus.PROCESSED, "", 2)
    assert Subscription.objects.get(stripe_subscription_id="sub_console").status == SubscriptionStatus.PAST_DUE
    rows = AdminAuditLog.objects.filter(action=AuditAction.PROCESS, resource_id="evt_console_1", actor=admin_user)
    (replay,) = [row for row in rows if row.new_value.get("replay")]
    assert replay.previous_value["status"] == WebhookStatus.FAILED


def test_replay_action_is_offered_only_to_staff_allowed_to_change_webhook_events(client, django_user_model):
    viewer = django_user_model.objects.create_user(username="viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(*_permissions("view_webhookevent"))
    client.force_login(viewer)

    page = client.get(WEBHOOK_EVENTS)

    assert page.status_code == 200
    assert b"replay_webhook_events" not in page.content


def _permissions(*codenames):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(codename__in=codenames)
