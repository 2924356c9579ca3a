"""What subscriptions tell the outside: subscription.created/updated/cancelled from every path of the
lifecycle, invoice.paid and invoice.payment_failed, and the payment.failed notification (one e-mail
and one event per invoice and attempt, however often its path runs); nothing for a refused or
rolled-back change."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.db import transaction
from django.test import TestCase
from django.utils import timezone
from rest_framework.test import APIClient

from billing_project.errors import RuleViolation
from billing_project.models import Notification, OutboundEvent
from billing_project.money import usd_to_cents
from payments.tests.helpers import checkout_paid
from subscriptions import services
from subscriptions.models import BillingInvoice, Subscription
from subscriptions.periods import add_months
from subscriptions.services.lifecycle import subscription_lock
from subscriptions.tests.conftest import StripeIds, deliver, stripe_event, subscribe_through_checkout

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def tiers(db):
    services.tier_catalog_seed()


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def customer(email: str = "ada@example.com"):
    return services.account_register(email=email, password="correct horse battery")


def paying(email: str = "ada@example.com") -> Subscription:
    """Enterprise Pro (no trial) paid through the offline provider at T0."""
    return services.subscription_start(user=customer(email), tier="enterprise_pro").subscription


def events(event_type: str) -> list[OutboundEvent]:
    return list(OutboundEvent.objects.filter(type=event_type).order_by("created_at"))


def expected(subscription: Subscription, **changes) -> dict:
    subscription.refresh_from_db()
    return {
        "id": str(subscription.pk),
        "user_id": str(subscription.user_id),
        "tier": subscription.tier,
        "status": subscription.status,
        "billing_cycle": subscription.billing_cycle,
        "current_period_start": subscription.current_period_start.isoformat(),
        "current_period_end": subscription.current_period_end.isoformat(),
        "cancel_at_period_end": subscription.cancel_at_period_end,
        **changes,
    }


def stripe_paying(email: str = "ada@example.com") -> Subscription:
    """Pro billed by a Stripe subscription since T0 (its checkout's webhook applied)."""
    user = customer(email)
    checkout_paid(
        user=user,
        metadata={"kind": "subscription", "tier": "pro", "billing_cycle": "monthly"},
        amount_cents=1900,
        session_id=f"cs_test_{user.pk}",
        customer=f"cus_{user.pk}",
        subscription=f"sub_{user.pk}",
        invoice=f"in_first_{user.pk}",
    )
    return Subscription.objects.get(checkout_session_id=f"cs_test_{user.pk}")


def renewal_fails(subscription: Subscription, *, attempt: int = 1, stripe=None) -> BillingInvoice:
    """The next period's payment fails, as Stripe's invoice.payment_failed reports it; with `stripe`
    (the emulator), Stripe holds that open invoice."""
    if stripe is not None:
        stripe.invoice_open(
            "in_renewal",
            customer=subscription.stripe_customer_id,
            amount=int(subscription.base_price_usd * 100),
            subscription=subscription.stripe_subscription_id,
        )
    with TestCase.captureOnCommitCallbacks(execute=True), transaction.atomic():
        locked = subscription_lock(subscription.pk)
        start = locked.current_period_end
        return services.invoice_payment_failed(
            subscription=locked,
            amount_due=usd_to_cents(locked.base_price_usd),
            period_start=start,
            period_end_at=add_months(start, 1),
            reason="Your card was declined.",
            stripe_invoice_id="in_renewal",
            attempt=attempt,
        )


# subscription.*


def test_the_free_plan_of_a_new_account_announces_only_its_free_credits():
    customer()

    assert list(OutboundEvent.objects.values_list("type", flat=True)) == ["credits.granted"]


def test_a_trial_start_emits_subscription_created_once_with_its_data(clock):
    trial = services.subscription_start(user=customer(), tier="pro").subscription

    (event,) = events("subscription.created")
    assert (event.subject, event.user) == (f"subscription:{trial.pk}", trial.user)
    assert event.data == expected(trial)
    assert event.data["status"] == "trial"
    assert not events("subscription.cancelled")  # the free plan it replaced is no subscription to announce


def test_a_paid_checkout_emits_subscription_created_and_invoice_paid_once(clock):
    subscription = paying()

    (created,) = events("subscription.created")
    assert created.data == expected(subscription)
    (paid,) = events("invoice.paid")
    invoice = subscription.invoices.get()
    assert paid.subject == f"invoice:{invoice.pk}"
    assert paid.data == {
        "id": str(invoice.pk),
        "user_id": str(subscription.user_id),
        "subscription_id": str(subscription.pk),
        "status": "paid",
        "amount_due": "149.00",
        "amount_paid": "149.00",
        "currency": "usd",
        "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat(),
        "paid_at": invoice.paid_at.isoformat(),
        "number": "",
        "hosted_invoice_url": "",
    }


def test_cancelling_at_the_period_end_emits_subscription_updated_once_with_what_it_was(clock):
    subscription = paying()

    services.subscription_cancel(subscription_id=subscription.pk, user=subscription.user)
    services.subscription_cancel(subscription_id=subscription.pk, user=subscription.user)  # already set

    (event,) = events("subscription.updated")
    assert event.data == expected(subscription, previous={"cancel_at_period_end": False})
    assert event.data["cancel_at_period_end"] is True


def test_a_refused_cancellation_emits_nothing(clock):
    user = customer()
    free = Subscription.objects.get(user=user)
    announced = OutboundEvent.objects.count()

    with pytest.raises(RuleViolation):
        services.subscription_cancel(subscription_id=free.pk, user=user)

    assert OutboundEvent.objects.count() == announced


def test_an_upgrade_emits_subscription_updated_with_the_previous_tier(clock):
    subscription = paying()
    clock.move_to(T0 + 10 * DAY)

    services.tier_change(subscription_id=subscription.pk, user=subscription.user, tier="enterprise_max")

    (event,) = events("subscription.updated")
    assert event.data == expected(subscription, previous={"tier": "enterprise_pro"})
    assert event.data["tier"] == "enterprise_max"
    assert len(events("invoice.paid")) == 2  # the first period's and the upgrade's


def test_a_failed_payment_emits_updated_past_due_and_invoice_payment_failed(clock):
    subscription = paying()
    clock.move_to(add_months(T0, 1))

    invoice = renewal_fails(subscription)

    (updated,) = events("subscription.updated")
    assert updated.data == expected(subscription, previous={"status": "active"})
    (failed,) = events("invoice.payment_failed")
    assert (failed.subject, failed.data["status"], failed.data["amount_due"]) == (
        f"invoice:{invoice.pk}",
        "open",
        "149.00",
    )
    assert failed.data["failure_reason"] == "Your card was declined."


def test_staff_cancelling_now_emits_subscription_cancelled_once(clock, staff_user):
    subscription = paying()

    services.subscription_status_change(
        subscription_id=subscription.pk, status="cancelled", reason="Asked by phone", actor=staff_user
    )

    (event,) = events("subscription.cancelled")
    assert event.data == expected(subscription)
    assert event.data["status"] == "cancelled"
    assert not events("subscription.updated")
    assert len(events("subscription.created")) == 1  # the free plan the user falls back to emits nothing


def test_an_unpaid_trial_that_ends_emits_subscription_cancelled_as_expired(clock):
    trial = services.subscription_start(user=customer(), tier="pro").subscription
    clock.move_to(trial.trial_ends_at + timedelta(minutes=1))

    assert services.trial_expire(subscription_id=trial.pk, now=trial.trial_ends_at + timedelta(minutes=1))

    (event,) = events("subscription.cancelled")
    assert (event.subject, event.data["status"]) == (f"subscription:{trial.pk}", "expired")


def test_a_change_rolled_back_emits_nothing(clock, staff_user):
    subscription = paying()
    before = OutboundEvent.objects.count()

    with pytest.raises(RuntimeError), transaction.atomic():
        services.subscription_status_change(
            subscription_id=subscription.pk, status="past_due", reason="Card check", actor=staff_user
        )
        raise RuntimeError("the caller fails after the change")

    assert OutboundEvent.objects.count() == before


# payment.failed


def test_a_failed_payment_tells_the_customer_once_per_attempt_in_text_and_html(clock):
    subscription = paying()
    clock.move_to(add_months(T0, 1))

    invoice = renewal_fails(subscription, attempt=1)
    renewal_fails(subscription, attempt=1)  # the same failure reported again

    (message,) = mail.outbox
    assert message.to == ["ada@example.com"]
    assert message.subject == "Your Enterprise Pro payment of 149.00 USD failed"
    assert "Your card was declined." in message.body
    assert message.alternatives[0][1] == "text/html"
    assert "<strong>149.00 USD</strong>" in message.alternatives[0][0]
    (notification,) = Notification.objects.filter(kind="payment.failed")
    assert notification.occurrence == f"{invoice.pk}:1"
    (event,) = events("payment.failed")
    assert (event.subject, event.user) == (f"invoice:{invoice.pk}", subscription.user)
    assert event.data == {
        "invoice_id": str(invoice.pk),
        "subscription_id": str(subscription.pk),
        "tier": "enterprise_pro",
        "tier_name": "Enterprise Pro",
        "amount_due": "149.00",
        "currency": "usd",
        "attempt": 1,
        "reason": "Your card was declined.",
        "hosted_invoice_url": "",
    }

    renewal_fails(subscription, attempt=2)  # Stripe's next attempt failed too: told again

    assert len(mail.outbox) == 2
    assert sorted(Notification.objects.filter(kind="payment.failed").values_list("occurrence", flat=True)) == [
        f"{invoice.pk}:1",
        f"{invoice.pk}:2",
    ]


def test_a_declined_dunning_retry_tells_the_customer_once_even_when_dunning_runs_again(clock, stripe_http):
    subscription = stripe_paying()
    clock.move_to(add_months(T0, 1))
    invoice = renewal_fails(subscription, stripe=stripe_http)
    mail.outbox.clear()
    stripe_http.pay_mode = "decline"

    clock.move_to(add_months(T0, 1) + DAY)
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert services.dunning_run() == {"retry_failed": 1}
        assert services.dunning_run() == {}

    (message,) = mail.outbox
    assert "(attempt 2)" in message.body
    assert Notification.objects.get(kind="payment.failed", occurrence=f"{invoice.pk}:2")
    assert [event.data["attempt"] for event in events("payment.failed")] == [1, 2]
    assert len(events("invoice.payment_failed")) == 2


def test_changes_stripe_reports_emit_one_event_each(stripe_http):
    webhook_client, ids = APIClient(), StripeIds.new()
    subscription = subscribe_through_checkout(webhook_client, customer(), ids)
    later = timezone.now()

    def reported(name: str, **fields):
        nonlocal later
        later += timedelta(minutes=1)
        response = deliver(webhook_client, stripe_event(name, ids, created=later, **fields))
        assert response.status_code == 200, response.content

    reported("customer.subscription.updated", status="active", cancel_at_period_end=True)
    reported("customer.subscription.updated", status="active", cancel_at_period_end=True)  # nothing changed
    reported("customer.subscription.updated", status="past_due", cancel_at_period_end=False)
    reported("customer.subscription.deleted", status="canceled")

    assert [event.data["previous"] for event in events("subscription.updated")] == [
        {"cancel_at_period_end": False},
        {"status": "active"},  # the transition, told by itself
        {"cancel_at_period_end": True},  # then the rest of the same report
    ]
    (cancelled,) = events("subscription.cancelled")
    assert (cancelled.subject, cancelled.data["status"]) == (f"subscription:{subscription.pk}", "cancelled")
