"""Stripe events that end, pause, re-price or create what a customer has, through the signed webhook
endpoint in the pinned API version's shapes: a license checkout that ends unpaid, a paused
subscription and the periodic jobs, a price changed on Stripe's side, a subscription created
outside Checkout."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from audit.models import AdminAuditLog, AuditAction
from billing_project.money import credits_floor
from credits.models import CreditAllocation, CreditSource
from licensing.models import LicenseStatus, PerpetualLicense, UpgradeStatus, VersionUpgrade
from payments.models import OperationCleanup, OperationKind, OperationState, PaymentOperation, StripeCustomer
from payments.tests.conftest import client_for
from subscriptions import proration
from subscriptions.jobs import monthly_credits_allocate
from subscriptions.models import (
    ChangeType,
    DunningAttempt,
    DunningResult,
    ProrationEvent,
    ProrationStatus,
    Subscription,
    SubscriptionStatus,
    UserEntitlement,
)
from subscriptions.periods import add_months
from subscriptions.services import dunning_run, tier_change
from subscriptions.tests.conftest import (
    MONTH,
    StripeIds,
    customer_register,
    deliver,
    stripe_event,
    subscribe_through_checkout,
)
from subscriptions.tests.test_stripe_events import money_events, session_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_http", "tier_catalog")]

Status = SubscriptionStatus
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


# A license checkout that ends unpaid


def license_checkout_started(user) -> tuple[PerpetualLicense, str]:
    bought = client_for(user).post("/api/v1/licenses/purchase/", {}, format="json")
    assert bought.status_code == 201, bought.content
    return PerpetualLicense.objects.get(pk=bought.json()["license"]["id"]), bought.json()["checkout"]["session_id"]


def license_audits(license_) -> list:
    rows = AdminAuditLog.objects.filter(resource_id=str(license_.pk), action=AuditAction.TRANSITION)
    return [(row.previous_value["status"], row.new_value["status"]) for row in rows]


def test_an_expired_license_checkout_ends_its_pending_license(
    webhook_client, stripe_http, django_capture_on_commit_callbacks
):
    user = customer_register("abandons@example.com")
    license_, session_id = license_checkout_started(user)
    session = {**stripe_http.object(session_id), "status": "expired"}

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(webhook_client, session_event("checkout.session.expired", session))

    assert (response.status_code, response.json()["status"]) == (200, "processed")
    license_.refresh_from_db()
    assert (license_.status, license_.status_reason) == (
        LicenseStatus.EXPIRED,
        "Its checkout ended unpaid: The checkout session expired unpaid.",
    )
    assert license_audits(license_) == [("pending", "expired")]
    operation = PaymentOperation.objects.get(kind=OperationKind.LICENSE_CHECKOUT, user=user)
    assert operation.state == OperationState.FAILED
    activated = client_for(user).post(
        "/api/v1/licenses/activate/",
        {"license_key": license_.license_key, "device_fingerprint": "device-1"},
        format="json",
    )
    assert activated.status_code >= 400
    # the user can buy again: a new pending license and checkout, the expired one left as it is
    again = client_for(user).post("/api/v1/licenses/purchase/", {}, format="json")
    assert again.status_code == 201, again.content
    assert again.json()["license"]["id"] != str(license_.pk)
    assert PerpetualLicense.objects.get(pk=license_.pk).status == LicenseStatus.EXPIRED


def test_a_license_whose_bank_debit_fails_is_ended_and_a_later_payment_does_not_bring_it_back(
    webhook_client, stripe_http, django_capture_on_commit_callbacks
):
    user = customer_register("debit@example.com")
    license_, session_id = license_checkout_started(user)
    pending = stripe_http.checkout_complete(session_id, payment_status="unpaid")
    now = timezone.now()
    deliver(webhook_client, session_event("checkout.session.completed", pending, created=now - 2 * MINUTE))

    with django_capture_on_commit_callbacks(execute=True):
        failed = deliver(
            webhook_client, session_event("checkout.session.async_payment_failed", pending, created=now - MINUTE)
        )

    assert failed.json()["status"] == "processed"
    operation = PaymentOperation.objects.get(kind=OperationKind.LICENSE_CHECKOUT, user=user)
    assert (operation.state, operation.effect) == (OperationState.FAILED, "failed")
    license_.refresh_from_db()
    assert license_.status == LicenseStatus.EXPIRED
    assert license_.status_reason == "Its checkout ended unpaid: The delayed payment of the checkout failed."

    # an older completed event of the session, arriving last, is stale
    stale = deliver(
        webhook_client,
        session_event("checkout.session.completed", {**pending, "payment_status": "paid"}, created=now - 3 * MINUTE),
    )
    assert stale.json()["result"]["action"] == "stale_event_skipped"

    # a newer one saying paid (money arriving for a checkout already given up) is returned, not applied
    paid = stripe_http.checkout_complete(session_id)
    with django_capture_on_commit_callbacks(execute=True):
        late = deliver(webhook_client, session_event("checkout.session.async_payment_succeeded", paid, created=now))

    assert late.json()["status"] == "processed", late.content
    license_.refresh_from_db()
    assert license_.status == LicenseStatus.EXPIRED
    operation = PaymentOperation.objects.get(kind=OperationKind.LICENSE_CHECKOUT, user=user)
    assert (operation.effect, operation.cleanup_due) == ("failed", OperationCleanup.NONE)
    (refund,) = stripe_http.objects_of("refund")
    assert refund["payment_intent"] == paid["payment_intent"]
    assert money_events(user=user) == []
    assert license_audits(license_) == [("pending", "expired")]


def test_an_expired_upgrade_checkout_fails_its_pending_upgrade_and_the_license_keeps_its_cover(
    webhook_client, stripe_http, settings
):
    user = customer_register("upgrader@example.com")
    license_, session_id = license_checkout_started(user)
    deliver(webhook_client, session_event("checkout.session.completed", stripe_http.checkout_complete(session_id)))
    license_.refresh_from_db()
    assert license_.status == LicenseStatus.ACTIVE
    covered = license_.eligible_until_version
    settings.LICENSE_CURRENT_VERSION = "2.0.0"
    started = client_for(user).post("/api/v1/licenses/upgrade/", {"license_key": license_.license_key}, format="json")
    assert started.status_code == 201, started.content
    upgrade_session = {**stripe_http.object(started.json()["checkout"]["session_id"]), "status": "expired"}

    deliver(webhook_client, session_event("checkout.session.expired", upgrade_session))

    upgrade = VersionUpgrade.objects.get(license=license_)
    assert upgrade.status == UpgradeStatus.FAILED
    license_.refresh_from_db()
    assert (license_.status, license_.eligible_until_version) == (LicenseStatus.ACTIVE, covered)


# A subscription Stripe paused


@pytest.fixture
def subscriber(webhook_client):
    user = customer_register("subscriber@example.com")
    ids = StripeIds.new()
    return user, subscribe_through_checkout(webhook_client, user, ids), ids


def pause_event(ids, *, created, resumed=False, **fields) -> dict:
    if resumed:
        return stripe_event(
            "customer.subscription.updated", ids, event_type="customer.subscription.resumed", created=created, **fields
        )
    return stripe_event(
        "customer.subscription.updated",
        ids,
        event_type="customer.subscription.paused",
        status="paused",
        created=created,
    )


def allocations_of(subscription) -> list:
    rows = CreditAllocation.objects.filter(subscription_id=subscription.pk).order_by("period_start")
    return [(row.period_start, row.amount) for row in rows]


def test_a_paused_annual_subscription_gets_no_monthly_credits_until_it_resumes(webhook_client):
    user = customer_register("annual@example.com")
    ids = StripeIds.new()
    subscription = subscribe_through_checkout(webhook_client, user, ids, billing_cycle="annual", amount_cents=19_000)
    start = subscription.current_period_start
    assert allocations_of(subscription) == [(start, 20_000)]
    deliver(webhook_client, pause_event(ids, created=timezone.now()))
    second_month = add_months(start, 1)

    with time_machine.travel(second_month + DAY, tick=False):
        outcomes = monthly_credits_allocate()

        assert outcomes["allocated"] == 0
        assert allocations_of(subscription) == [(start, 20_000)]
        assert UserEntitlement.objects.get(user=user).tier == "free"

        resumed = deliver(webhook_client, pause_event(ids, created=timezone.now(), resumed=True))

        assert resumed.json()["result"]["pause"] == "resumed"
        assert allocations_of(subscription) == [(start, 20_000), (second_month, 20_000)]
        assert monthly_credits_allocate()["allocated"] == 0
        assert UserEntitlement.objects.get(user=user).tier == "pro"


def test_a_paused_subscription_is_not_retried_and_its_retries_move_later_by_the_pause(
    webhook_client, subscriber, stripe_http
):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    start = subscription.current_period_end
    failed_at = timezone.now()
    deliver(
        webhook_client,
        stripe_event("invoice.paid", renewal, event_type="invoice.payment_failed", period=(start, start + MONTH)),
    )
    stripe_http.invoice_open(renewal.invoice, customer=ids.customer, amount=1900, subscription=ids.subscription)
    stripe_http.pay_mode = "decline"
    first_retry = DunningAttempt.objects.get(subscription=subscription, attempt_number=1).scheduled_at
    deliver(webhook_client, pause_event(ids, created=failed_at + MINUTE))

    with time_machine.travel(failed_at + 8 * DAY, tick=False):
        assert dunning_run() == {}
    assert set(DunningAttempt.objects.values_list("result", flat=True)) == {DunningResult.SCHEDULED}
    assert stripe_http.calls("POST") == []
    assert Subscription.objects.get(pk=subscription.pk).status == Status.PAST_DUE

    paused_at = Subscription.objects.get(pk=subscription.pk).paused_at  # the event's time, to the second
    resumed_at = (failed_at + 10 * DAY).replace(microsecond=0)
    with time_machine.travel(resumed_at, tick=False):
        deliver(webhook_client, pause_event(ids, created=resumed_at, resumed=True, status="past_due"))
        assert dunning_run() == {}
    paused_for = resumed_at - paused_at
    moved = DunningAttempt.objects.get(subscription=subscription, attempt_number=1).scheduled_at
    assert moved == first_retry + paused_for

    with time_machine.travel(moved + MINUTE, tick=False):
        assert dunning_run() == {"retry_failed": 1}


def test_a_paused_subscription_in_its_grace_period_is_not_suspended_while_paused(webhook_client, subscriber):
    user, subscription, ids = subscriber
    renewal = ids.next_invoice()
    start = subscription.current_period_end
    deliver(
        webhook_client,
        stripe_event("invoice.paid", renewal, event_type="invoice.payment_failed", period=(start, start + MONTH)),
    )
    deliver(
        webhook_client,
        stripe_event(
            "invoice.paid",
            renewal,
            event_type="invoice.marked_uncollectible",
            status="uncollectible",
            period=(start, start + MONTH),
        ),
    )
    subscription.refresh_from_db()
    grace_end = subscription.grace_period_ends_at
    deliver(webhook_client, pause_event(ids, created=timezone.now()))
    paused_at = Subscription.objects.get(pk=subscription.pk).paused_at  # the event's time, to the second

    with time_machine.travel(grace_end + DAY, tick=False):
        assert dunning_run() == {}
        assert Subscription.objects.get(pk=subscription.pk).status == Status.GRACE_PERIOD
        # Stripe resumes it still behind on its payment
        resumed_at = timezone.now().replace(microsecond=0)
        deliver(webhook_client, pause_event(ids, created=resumed_at, resumed=True, status="past_due"))

    subscription.refresh_from_db()
    assert subscription.grace_period_ends_at == grace_end + (resumed_at - paused_at)
    with time_machine.travel(subscription.grace_period_ends_at + MINUTE, tick=False):
        assert dunning_run() == {"suspended": 1}
    assert UserEntitlement.objects.get(user=user).tier == "free"


# A subscription created outside Checkout


def created_outside_checkout(ids, **fields) -> dict:
    """customer.subscription.created of a subscription made in Stripe's dashboard or API: its
    metadata names no checkout of ours."""
    start = timezone.now().replace(microsecond=0)
    return stripe_event(
        "customer.subscription.updated",
        ids,
        event_type="customer.subscription.created",
        period=(start, start + MONTH),
        metadata={},
        **fields,
    )


def known_customer(email: str):
    user = customer_register(email)
    ids = StripeIds.new()
    StripeCustomer.objects.create(user=user, stripe_customer_id=ids.customer)
    return user, ids


def test_a_subscription_created_outside_checkout_for_a_known_customer_begins_here(webhook_client):
    user, ids = known_customer("dashboard@example.com")
    event = created_outside_checkout(ids)
    item = event["data"]["object"]["items"]["data"][0]

    response = deliver(webhook_client, event)

    assert (response.status_code, response.json()["status"]) == (200, "processed"), response.content
    assert response.json()["result"]["action"] == "subscription_updated"
    subscription = Subscription.objects.get(stripe_subscription_id=ids.subscription)
    assert (subscription.user, subscription.status, subscription.tier, subscription.stripe_customer_id) == (
        user,
        Status.ACTIVE,
        "pro",
        ids.customer,
    )
    assert int(subscription.current_period_start.timestamp()) == item["current_period_start"]
    assert int(subscription.current_period_end.timestamp()) == item["current_period_end"]
    assert UserEntitlement.objects.get(user=user).tier == "pro"
    assert allocations_of(subscription) == [(subscription.current_period_start, 20_000)]
    assert not Subscription.objects.filter(user=user, tier="free", status=Status.ACTIVE).exists()
    assert AdminAuditLog.objects.filter(resource_id=str(subscription.pk), action=AuditAction.CREATE).exists()

    # its first invoice records the payment, once; the event again changes nothing
    first_invoice = stripe_event(
        "invoice.paid",
        ids,
        period=(subscription.current_period_start, subscription.current_period_end),
        billing_reason="subscription_create",
    )
    first_invoice["data"]["object"]["parent"]["subscription_details"]["metadata"] = {}
    paid = deliver(webhook_client, first_invoice)
    assert paid.json()["result"]["action"] == "invoice_paid", paid.content
    assert money_events(user=user) == [("invoice_paid", 1900)]
    assert deliver(webhook_client, event).json()["replayed"] is True
    assert Subscription.objects.filter(user=user, tier="pro").count() == 1
    assert len(allocations_of(subscription)) == 1


def test_a_subscription_created_outside_checkout_waits_for_its_first_payment(webhook_client):
    user, ids = known_customer("incomplete@example.com")
    now = timezone.now()

    waiting = deliver(webhook_client, created_outside_checkout(ids, status="incomplete", created=now - MINUTE))

    assert waiting.json()["result"] == {"action": "awaiting_first_payment", "stripe_subscription_id": ids.subscription}
    assert not Subscription.objects.filter(stripe_subscription_id=ids.subscription).exists()

    active = created_outside_checkout(ids, created=now)
    active["type"] = "customer.subscription.updated"
    deliver(webhook_client, active)

    assert Subscription.objects.get(stripe_subscription_id=ids.subscription).status == Status.ACTIVE
    assert UserEntitlement.objects.get(user=user).tier == "pro"


def test_the_first_invoice_of_a_subscription_created_outside_checkout_may_come_first(webhook_client, stripe_http):
    user, ids = known_customer("invoice-first@example.com")
    stripe_http.subscription_add(ids.subscription, customer=ids.customer, unit_amount=3900)
    start = timezone.now()
    invoice = stripe_event("invoice.paid", ids, period=(start, start + MONTH), billing_reason="subscription_create")
    invoice["data"]["object"]["parent"]["subscription_details"]["metadata"] = {}
    invoice["data"]["object"]["amount_paid"] = 3900

    response = deliver(webhook_client, invoice)

    assert response.json()["status"] == "processed", response.content
    assert ("GET", f"subscriptions/{ids.subscription}") in stripe_http.calls()
    subscription = Subscription.objects.get(stripe_subscription_id=ids.subscription)
    assert (subscription.user, subscription.tier, subscription.status) == (user, "pro_max", Status.ACTIVE)
    assert money_events(user=user) == [("invoice_paid", 3900)]
    created = deliver(webhook_client, created_outside_checkout(ids, created=start - MINUTE))
    assert created.json()["result"]["action"] == "stale_event_skipped"
    assert Subscription.objects.filter(user=user).exclude(tier="free").count() == 1


def test_a_subscription_created_outside_checkout_stays_unmatched_when_it_cannot_begin_here(webhook_client):
    stranger = StripeIds.new()  # a customer of no user here
    unknown = deliver(webhook_client, created_outside_checkout(stranger))
    assert (unknown.json()["status"], unknown.json()["result"]["reason"]) == (
        "unmatched",
        f"No subscription {stranger.subscription} here (customer.subscription.created).",
    )

    user, ids = known_customer("odd-price@example.com")
    odd = created_outside_checkout(ids)
    odd["data"]["object"]["items"]["data"][0]["price"]["unit_amount"] = 1234
    odd_price = deliver(webhook_client, odd)
    assert (odd_price.json()["status"], odd_price.json()["result"]["reason"]) == (
        "unmatched",
        f"Subscription {ids.subscription} bills a price that is no tier here.",
    )
    assert not Subscription.objects.filter(stripe_subscription_id__in=[stranger.subscription, ids.subscription])


# A price changed on Stripe's side


def price_changed(ids, unit_amount: int, *, created) -> dict:
    event = stripe_event("customer.subscription.updated", ids, created=created)
    item = event["data"]["object"]["items"]["data"][0]
    item["price"]["unit_amount"], item["price"]["unit_amount_decimal"] = unit_amount, str(unit_amount)
    return event


def test_an_upgrade_on_stripes_side_grants_the_prorated_credits_once(webhook_client, subscriber):
    user, subscription, ids = subscriber
    changed_at = (subscription.current_period_start + 10 * DAY).replace(microsecond=0)
    fraction = proration.fraction_left(
        period_start=subscription.current_period_start, period_end=subscription.current_period_end, at=changed_at
    )
    expected = credits_floor((50_000 - 20_000) * fraction)

    with time_machine.travel(changed_at, tick=False):
        event = price_changed(ids, 3900, created=changed_at)
        response = deliver(webhook_client, event)
        replayed = deliver(webhook_client, event)
        again = deliver(webhook_client, price_changed(ids, 3900, created=changed_at + MINUTE))
        older = deliver(webhook_client, price_changed(ids, 1900, created=changed_at - MINUTE))

    assert (response.json()["result"]["tier"], response.json()["result"]["tier_changed"]) == ("pro_max", True)
    assert replayed.json()["replayed"] is True
    assert again.json()["result"]["tier_changed"] is False
    assert older.json()["result"]["action"] == "stale_event_skipped"
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.monthly_credit_allocation) == ("pro_max", 50_000)
    (granted,) = CreditAllocation.objects.filter(subscription_id=subscription.pk, source=CreditSource.PRORATION)
    assert (granted.amount, granted.period_start, granted.expires_at) == (
        expected,
        changed_at,
        subscription.current_period_end,
    )
    assert 0 < expected < 30_000
    event_row = ProrationEvent.objects.get(subscription=subscription)
    assert (event_row.change_type, event_row.status, event_row.credits_adjustment, event_row.net_charge_usd) == (
        ChangeType.UPGRADE,
        ProrationStatus.APPLIED,
        expected,
        Decimal("0.00"),
    )
    assert UserEntitlement.objects.get(user=user).tier == "pro_max"


def test_a_downgrade_on_stripes_side_waits_for_the_period_end_as_the_projects_own(webhook_client):
    user = customer_register("downgrader@example.com")
    ids = StripeIds.new()
    subscription = subscribe_through_checkout(webhook_client, user, ids, tier="pro_max", amount_cents=3900)

    response = deliver(webhook_client, price_changed(ids, 1900, created=timezone.now()))

    assert (response.json()["result"]["tier"], response.json()["result"]["tier_changed"]) == ("pro_max", False)
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.scheduled_tier, subscription.monthly_credit_allocation) == (
        "pro_max",
        "pro",
        50_000,
    )
    assert UserEntitlement.objects.get(user=user).tier == "pro_max"
    assert not CreditAllocation.objects.filter(source=CreditSource.PRORATION).exists()
    pending = ProrationEvent.objects.get(subscription=subscription)
    assert (pending.change_type, pending.status, pending.effective_date) == (
        ChangeType.DOWNGRADE,
        ProrationStatus.PENDING,
        subscription.current_period_end,
    )

    # the renewal applies it: the new period at the lower tier and its credits
    start = subscription.current_period_end
    with time_machine.travel(start + MINUTE, tick=False):
        renewal = stripe_event(
            "invoice.paid", ids.next_invoice(), period=(start, start + MONTH), billing_reason="subscription_cycle"
        )
        deliver(webhook_client, renewal)
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.scheduled_tier) == ("pro", "")
    assert ProrationEvent.objects.get(pk=pending.pk).status == ProrationStatus.APPLIED
    assert allocations_of(subscription)[-1] == (subscription.current_period_start, 20_000)
    assert UserEntitlement.objects.get(user=user).tier == "pro"


def test_a_price_raised_back_on_stripes_side_withdraws_the_downgrade_waiting_for_the_period_end(webhook_client):
    user = customer_register("changed-mind@example.com")
    ids = StripeIds.new()
    subscription = subscribe_through_checkout(webhook_client, user, ids, tier="pro_max", amount_cents=3900)
    lowered_at = timezone.now().replace(microsecond=0) + MINUTE
    with time_machine.travel(lowered_at, tick=False):
        deliver(webhook_client, price_changed(ids, 1900, created=lowered_at))
    pending = ProrationEvent.objects.get(subscription=subscription, status=ProrationStatus.PENDING)

    raised_at = lowered_at + MINUTE
    with time_machine.travel(raised_at, tick=False):
        response = deliver(webhook_client, price_changed(ids, 3900, created=raised_at))

    assert response.json()["result"]["tier"] == "pro_max"
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.scheduled_tier) == ("pro_max", "")
    assert ProrationEvent.objects.get(pk=pending.pk).status == ProrationStatus.REVERSED

    # the renewal keeps the tier the customer pays for
    start = subscription.current_period_end
    with time_machine.travel(start + MINUTE, tick=False):
        renewal = stripe_event(
            "invoice.paid", ids.next_invoice(), period=(start, start + MONTH), billing_reason="subscription_cycle"
        )
        deliver(webhook_client, renewal)
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.monthly_credit_allocation) == ("pro_max", 50_000)
    assert UserEntitlement.objects.get(user=user).tier == "pro_max"


def test_an_event_older_than_our_own_downgrade_does_not_withdraw_it(webhook_client):
    user = customer_register("downgrades-here@example.com")
    ids = StripeIds.new()
    subscription = subscribe_through_checkout(webhook_client, user, ids, tier="pro_max", amount_cents=3900)
    before_ours = timezone.now().replace(microsecond=0) - MINUTE
    tier_change(subscription_id=subscription.pk, user=user, tier="pro")
    pending = ProrationEvent.objects.get(subscription=subscription, status=ProrationStatus.PENDING)

    response = deliver(webhook_client, price_changed(ids, 3900, created=before_ours))

    assert response.json()["result"]["action"] == "subscription_updated"
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.scheduled_tier) == ("pro_max", "pro")
    assert ProrationEvent.objects.get(pk=pending.pk).status == ProrationStatus.PENDING
