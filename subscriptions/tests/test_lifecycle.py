"""The subscription lifecycle (SPEC section 4): the state machine, starting a tier (trial or checkout),
paid checkouts, cancellation and the renewals of the monthly job."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from audit.models import AdminAuditLog, AuditAction
from billing_project.errors import DomainError
from credits.models import CreditAllocation, CreditSource, UserCreditBalance
from payments.models import OperationState, PaymentEvent, PaymentOperation, StripeCustomer
from payments.tests.helpers import checkout_paid
from subscriptions import jobs
from subscriptions.catalog import TIERS
from subscriptions.models import (
    LIVE_STATUSES,
    BillingInvoice,
    InvoiceStatus,
    PaymentStatus,
    PaymentTransaction,
    ProrationEvent,
    Subscription,
    SubscriptionStatus,
    UserEntitlement,
)
from subscriptions.periods import add_months
from subscriptions.services import (
    TRANSITIONS,
    account_register,
    subscription_cancel,
    subscription_start,
    subscription_status_change,
    tier_catalog_seed,
    tier_change,
    trial_expire,
)
from subscriptions.tests.factories import SubscriptionFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

ENTITLEMENTS = {spec["tier"]: spec["entitlements"] for spec in TIERS}
PRICES = {spec["tier"]: spec["monthly_price_usd"] for spec in TIERS}
CREDITS = {spec["tier"]: spec["monthly_credit_allocation"] for spec in TIERS}
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

S = SubscriptionStatus
# SPEC section 4, written out again here so that the code's table is checked against it.
SPEC_TRANSITIONS = {
    (S.TRIAL, S.ACTIVE),
    (S.TRIAL, S.EXPIRED),
    (S.TRIAL, S.CANCELLED),
    (S.ACTIVE, S.PAST_DUE),
    (S.ACTIVE, S.CANCELLED),
    (S.ACTIVE, S.EXPIRED),
    (S.PAST_DUE, S.ACTIVE),
    (S.PAST_DUE, S.GRACE_PERIOD),
    (S.PAST_DUE, S.SUSPENDED),
    (S.PAST_DUE, S.CANCELLED),
    (S.GRACE_PERIOD, S.ACTIVE),
    (S.GRACE_PERIOD, S.SUSPENDED),
    (S.GRACE_PERIOD, S.CANCELLED),
    (S.SUSPENDED, S.ACTIVE),
    (S.SUSPENDED, S.CANCELLED),
}
FORBIDDEN = sorted({(a, b) for a in S for b in S} - SPEC_TRANSITIONS)


@pytest.fixture
def catalog(db):
    tier_catalog_seed()


@pytest.fixture
def customer(db, catalog):
    """A registered user on the free tier (live free subscription, 2,000 credits)."""
    return account_register(email="ann@example.com", password="correct horse battery staple")


def subscribed(user, tier="pro", *, status=S.ACTIVE, start=NOW, stripe=False, **fields) -> Subscription:
    defaults = {
        "base_price_usd": PRICES[tier],
        "monthly_credit_allocation": CREDITS[tier],
        "current_period_start": start,
        "current_period_end": start + 30 * DAY,
        "stripe_customer_id": f"cus_{user.pk}" if stripe else None,
        "stripe_subscription_id": f"sub_{user.pk}" if stripe else None,
    }
    return SubscriptionFactory(user=user, tier=tier, status=status, **{**defaults, **fields})


def live_subscriptions(user):
    return Subscription.objects.filter(user=user, status__in=LIVE_STATUSES)


def balance_of(user) -> int:
    return UserCreditBalance.objects.filter(user=user).values_list("amount", flat=True).first() or 0


def entitlement_of(user) -> tuple:
    entitlement = UserEntitlement.objects.get(user=user)
    return entitlement.tier, entitlement.entitlements


def transition_rows(subscription):
    return AdminAuditLog.objects.filter(action=AuditAction.TRANSITION, resource_id=str(subscription.pk))


def stripe_calls(stripe_http) -> list[tuple[str, str]]:
    return [(method.lower(), path) for method, path in stripe_http.calls()]


# The state machine


def test_the_transition_table_is_the_one_of_the_spec():
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == SPEC_TRANSITIONS


@pytest.mark.parametrize(("current", "target"), sorted(SPEC_TRANSITIONS))
def test_every_allowed_transition_succeeds_and_is_audited_with_its_reason(user, staff_user, current, target):
    subscription = subscribed(user, status=current)

    with time_machine.travel(NOW, tick=False):
        changed = subscription_status_change(
            subscription_id=subscription.pk, status=target, reason="Checked with the customer", actor=staff_user
        )

    subscription.refresh_from_db()
    assert changed.status == subscription.status == target
    (row,) = transition_rows(subscription)
    assert (row.actor, row.resource_type) == (staff_user, "subscriptions.subscription")
    assert row.new_value["reason"] == "Checked with the customer"
    assert (row.previous_value["status"], row.new_value["status"]) == (current, target)
    assert subscription.cancelled_at == (NOW if target == S.CANCELLED else None)
    assert subscription.grace_period_ends_at == (NOW + 7 * DAY if target == S.GRACE_PERIOD else None)
    (live,) = live_subscriptions(user)
    if target in (S.CANCELLED, S.EXPIRED):
        assert (live.tier, live.status) == ("free", S.ACTIVE)
    else:
        assert live == subscription


@pytest.mark.parametrize(("current", "target"), FORBIDDEN)
def test_a_forbidden_transition_is_a_409_and_writes_nothing(user, staff_user, current, target):
    subscription = subscribed(user, status=current)
    updated_at = subscription.updated_at

    with pytest.raises(DomainError) as refused:
        subscription_status_change(subscription_id=subscription.pk, status=target, reason="Try it", actor=staff_user)

    assert (refused.value.status, refused.value.code) == (409, "invalid_transition")
    assert refused.value.extra == {"from_status": current, "to_status": target}
    subscription.refresh_from_db()
    assert (subscription.status, subscription.updated_at) == (current, updated_at)
    assert not AdminAuditLog.objects.exists()
    assert Subscription.objects.filter(user=user).count() == 1
    assert not UserEntitlement.objects.exists()


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_status_change_needs_a_reason(user, staff_user, reason):
    subscription = subscribed(user)

    with pytest.raises(DomainError) as refused:
        subscription_status_change(subscription_id=subscription.pk, status=S.PAST_DUE, reason=reason, actor=staff_user)

    assert (refused.value.status, refused.value.code) == (422, "reason_required")
    subscription.refresh_from_db()
    assert subscription.status == S.ACTIVE
    assert not AdminAuditLog.objects.exists()


def test_a_status_change_of_an_unknown_subscription_is_404(staff_user):
    with pytest.raises(DomainError) as refused:
        subscription_status_change(
            subscription_id="00000000-0000-0000-0000-000000000000", status=S.ACTIVE, reason="x", actor=staff_user
        )

    assert (refused.value.status, refused.value.code) == (404, "subscription_not_found")


def test_suspension_falls_back_to_free_entitlements_and_reactivation_restores_the_tiers(user, staff_user):
    subscription = subscribed(user, "pro_max")

    for status in (S.PAST_DUE, S.SUSPENDED):
        subscription_status_change(subscription_id=subscription.pk, status=status, reason="Unpaid", actor=staff_user)
    suspended = entitlement_of(user)
    subscription_status_change(subscription_id=subscription.pk, status=S.ACTIVE, reason="Paid", actor=staff_user)

    assert suspended == ("free", ENTITLEMENTS["free"])
    assert entitlement_of(user) == ("pro_max", ENTITLEMENTS["pro_max"])
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.status) == ("pro_max", S.ACTIVE)
    assert list(live_subscriptions(user)) == [subscription]


def test_cancelling_a_paid_subscription_puts_the_user_on_a_new_free_subscription(customer, staff_user):
    started = subscription_start(user=customer, tier="enterprise_pro")

    with time_machine.travel(NOW, tick=False):
        subscription_status_change(
            subscription_id=started.subscription.pk, status=S.CANCELLED, reason="Asked by phone", actor=staff_user
        )

    (live,) = live_subscriptions(customer)
    assert (live.tier, live.status, live.base_price_usd) == ("free", S.ACTIVE, Decimal("0.00"))
    assert (live.current_period_start, live.current_period_end) == (NOW, add_months(NOW, 1))
    assert CreditAllocation.objects.filter(subscription_id=live.pk, amount=2_000).count() == 1
    assert entitlement_of(customer) == ("free", ENTITLEMENTS["free"])
    assert Subscription.objects.filter(user=customer, tier="free", status=S.CANCELLED).count() == 1


def test_staff_ending_a_stripe_billed_subscription_stops_stripe_billing_it(
    user, staff_user, stripe_http, django_capture_on_commit_callbacks
):
    subscription = subscribed(user, stripe=True)

    with django_capture_on_commit_callbacks(execute=True):
        subscription_status_change(
            subscription_id=subscription.pk, status=S.CANCELLED, reason="Fraud", actor=staff_user
        )

    # Stripe is told once the change has committed, never inside its transaction
    assert stripe_calls(stripe_http) == [("delete", f"subscriptions/sub_{user.pk}")]
    sync = PaymentOperation.objects.get(kind="subscription_sync")
    assert (sync.state, sync.params["action"]) == ("succeeded", "cancel_now")
    subscription.refresh_from_db()
    assert subscription.status == S.CANCELLED


def test_staff_suspending_a_stripe_billed_subscription_leaves_stripe_alone(user, staff_user, stripe_http):
    subscription = subscribed(user, status=S.PAST_DUE, stripe=True)

    subscription_status_change(subscription_id=subscription.pk, status=S.SUSPENDED, reason="Unpaid", actor=staff_user)

    assert stripe_http.requests == []


# Starting a tier


def test_a_free_user_starting_pro_gets_a_14_day_trial_with_the_pro_credits_and_entitlements(customer):
    free = Subscription.objects.get(user=customer)

    with time_machine.travel(NOW, tick=False):
        started = subscription_start(user=customer, tier="pro")

    assert started.checkout is None
    trial = started.subscription
    trial.refresh_from_db()
    assert (trial.tier, trial.status, trial.billing_cycle) == ("pro", S.TRIAL, "monthly")
    assert trial.trial_ends_at == trial.current_period_end == NOW + 14 * DAY
    allocation = CreditAllocation.objects.get(subscription_id=trial.pk)
    assert (allocation.amount, allocation.source, allocation.expires_at) == (
        20_000,
        CreditSource.SUBSCRIPTION,
        NOW + 14 * DAY,
    )
    assert balance_of(customer) == 2_000 + 20_000
    entitlement = UserEntitlement.objects.get(user=customer)
    assert (entitlement.tier, entitlement.entitlements, entitlement.expires_at) == (
        "pro",
        ENTITLEMENTS["pro"],
        NOW + 14 * DAY,
    )
    free.refresh_from_db()
    assert (free.status, free.cancelled_at) == (S.CANCELLED, NOW)
    assert list(live_subscriptions(customer)) == [trial]
    assert not BillingInvoice.objects.exists()


def test_a_second_trial_is_never_given_after_the_first_ended(customer):
    first = subscription_start(user=customer, tier="pro").subscription
    trial_expire(subscription_id=first.pk, now=first.trial_ends_at)

    again = subscription_start(user=customer, tier="pro")

    first.refresh_from_db()
    assert first.status == S.EXPIRED
    assert again.checkout.completed is True
    assert (again.subscription.status, again.subscription.trial_ends_at) == (S.ACTIVE, None)
    assert Subscription.objects.filter(user=customer, trial_ends_at__isnull=False).count() == 1


def test_a_trial_of_one_tier_uses_up_the_trial_of_every_tier(customer):
    first = subscription_start(user=customer, tier="pro").subscription
    trial_expire(subscription_id=first.pk, now=first.trial_ends_at)

    other = subscription_start(user=customer, tier="pro_max")

    assert other.subscription.status == S.ACTIVE
    assert other.checkout is not None


def test_a_tier_without_trial_days_goes_to_checkout_which_completes_at_once_offline(customer):
    with time_machine.travel(NOW, tick=False):
        started = subscription_start(user=customer, tier="enterprise_pro")

    assert started.checkout.completed is True
    assert started.checkout.url is None
    assert started.checkout.session_id.startswith("offline_")
    subscription = started.subscription
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.status, subscription.trial_ends_at) == ("enterprise_pro", S.ACTIVE, None)
    assert subscription.checkout_session_id == started.checkout.session_id
    assert (subscription.base_price_usd, subscription.monthly_credit_allocation) == (Decimal("149.00"), 250_000)
    assert (subscription.current_period_start, subscription.current_period_end) == (NOW, add_months(NOW, 1))
    invoice = BillingInvoice.objects.get(subscription=subscription)
    assert (invoice.status, invoice.amount_paid_usd, invoice.period_start) == (
        InvoiceStatus.PAID,
        Decimal("149.00"),
        NOW,
    )
    payment = PaymentTransaction.objects.get(invoice=invoice)
    assert (payment.status, payment.amount_usd) == (PaymentStatus.SUCCEEDED, Decimal("149.00"))
    assert CreditAllocation.objects.get(subscription_id=subscription.pk).amount == 250_000
    assert balance_of(customer) == 2_000 + 250_000
    assert entitlement_of(customer) == ("enterprise_pro", ENTITLEMENTS["enterprise_pro"])
    assert list(live_subscriptions(customer)) == [subscription]
    assert PaymentEvent.objects.filter(event_type="checkout_completed", user=customer).count() == 1


def test_an_annual_checkout_charges_the_annual_price_for_a_year(customer):
    with time_machine.travel(NOW, tick=False):
        started = subscription_start(user=customer, tier="enterprise_pro", billing_cycle="annual")

    subscription = started.subscription
    assert (subscription.billing_cycle, subscription.base_price_usd) == ("annual", Decimal("1490.00"))
    assert subscription.current_period_end == add_months(NOW, 12)
    assert BillingInvoice.objects.get(subscription=subscription).amount_paid_usd == Decimal("1490.00")
    allocation = CreditAllocation.objects.get(subscription_id=subscription.pk)
    assert (allocation.amount, allocation.period_end) == (250_000, add_months(NOW, 1))


@pytest.mark.parametrize(
    ("billing_cycle", "interval", "cents"), [("monthly", "month", "14900"), ("annual", "year", "149000")]
)
def test_with_stripe_a_start_answers_the_checkout_url_and_creates_no_subscription(
    customer, stripe_http, billing_cycle, interval, cents
):
    free = Subscription.objects.get(user=customer)

    started = subscription_start(user=customer, tier="enterprise_pro", billing_cycle=billing_cycle)

    assert started.subscription is None
    assert started.checkout.completed is False
    assert started.checkout.url == f"https://checkout.stripe.com/c/pay/{started.checkout.session_id}"
    assert stripe_calls(stripe_http) == [("post", "customers"), ("post", "checkout/sessions")]
    form = stripe_http.requests[1]["form"]
    assert form["mode"] == "subscription"
    assert form["client_reference_id"] == str(customer.pk)
    assert form["customer"] == StripeCustomer.objects.get(user=customer).stripe_customer_id
    assert (form["metadata[kind]"], form["metadata[tier]"], form["metadata[billing_cycle]"]) == (
        "subscription",
        "enterprise_pro",
        billing_cycle,
    )
    assert form["subscription_data[metadata][tier]"] == "enterprise_pro"
    assert form["line_items[0][price_data][recurring][interval]"] == interval
    assert form["line_items[0][price_data][unit_amount]"] == cents
    assert list(live_subscriptions(customer)) == [free]
    assert not BillingInvoice.objects.exists()
    assert entitlement_of(customer)[0] == "free"


def test_a_user_in_a_trial_starting_the_same_tier_converts_it_through_checkout(customer):
    trial = subscription_start(user=customer, tier="pro").subscription

    with time_machine.travel(NOW + 5 * DAY, tick=False):
        converted = subscription_start(user=customer, tier="pro")

    assert converted.subscription.pk == trial.pk
    trial.refresh_from_db()
    assert (trial.status, trial.checkout_session_id) == (S.ACTIVE, converted.checkout.session_id)
    assert (trial.current_period_start, trial.current_period_end) == (NOW + 5 * DAY, add_months(NOW + 5 * DAY, 1))
    assert trial.trial_ends_at is not None
    (row,) = transition_rows(trial)
    assert row.new_value["reason"] == "Trial paid"
    assert BillingInvoice.objects.get(subscription=trial).amount_paid_usd == Decimal("19.00")
    entitlement = UserEntitlement.objects.get(user=customer)
    assert (entitlement.tier, entitlement.expires_at) == ("pro", None)
    assert list(live_subscriptions(customer)) == [trial]


def test_a_user_in_a_trial_starting_the_same_tier_with_stripe_stays_in_the_trial_until_paid(customer, stripe_http):
    trial = subscription_start(user=customer, tier="pro").subscription

    started = subscription_start(user=customer, tier="pro")

    assert started.subscription is None
    assert started.checkout.url.startswith("https://checkout.stripe.com/")
    trial.refresh_from_db()
    assert trial.status == S.TRIAL


@pytest.mark.parametrize("live_status", [S.ACTIVE, S.TRIAL, S.PAST_DUE])
def test_a_user_with_a_live_paid_subscription_cannot_start_another(user, live_status):
    subscription = subscribed(user, "pro", status=live_status)

    with pytest.raises(DomainError) as refused:
        subscription_start(user=user, tier="pro_max")

    assert (refused.value.status, refused.value.code) == (409, "subscription_exists")
    assert refused.value.extra == {"subscription_id": str(subscription.pk)}
    assert list(Subscription.objects.filter(user=user)) == [subscription]


@pytest.mark.parametrize("tier", ["free", "perpetual"])
def test_free_and_perpetual_are_not_started_as_subscriptions(customer, tier):
    with pytest.raises(DomainError) as refused:
        subscription_start(user=customer, tier=tier)

    assert (refused.value.status, refused.value.code) == (422, "tier_not_subscribable")
    assert Subscription.objects.filter(user=customer).count() == 1


# Completing a checkout (offline at once, or the Stripe webhook)


def stripe_checkout_paid(user, *, session_id="cs_test_1", tier="pro_max", billing_cycle="monthly", **fields):
    """The Stripe checkout of a subscription paid, as its checkout.session.completed delivers it."""
    metadata = {"kind": "subscription", "tier": tier, "billing_cycle": billing_cycle, **fields}
    return checkout_paid(
        user=user,
        metadata=metadata,
        amount_cents=3900,
        session_id=session_id,
        customer="cus_paid",
        subscription="sub_paid",
        invoice="in_paid",
    )


def test_completing_a_checkout_is_idempotent_on_the_session_id(customer):
    stripe_checkout_paid(customer)
    stripe_checkout_paid(customer)

    first = Subscription.objects.get(checkout_session_id="cs_test_1")
    assert (first.tier, first.status, first.stripe_customer_id, first.stripe_subscription_id) == (
        "pro_max",
        S.ACTIVE,
        "cus_paid",
        "sub_paid",
    )
    assert Subscription.objects.filter(user=customer, tier="pro_max").count() == 1
    assert BillingInvoice.objects.get().stripe_invoice_id == "in_paid"
    assert PaymentTransaction.objects.count() == 1
    assert CreditAllocation.objects.filter(subscription_id=first.pk).count() == 1
    assert balance_of(customer) == 2_000 + 50_000
    assert PaymentEvent.objects.filter(event_type="checkout_completed").count() == 1


@pytest.mark.parametrize("metadata", [{"tier": "platinum"}, {"billing_cycle": "fortnightly"}])
def test_a_paid_checkout_with_bad_metadata_changes_nothing_and_is_refunded(customer, metadata):
    row = stripe_checkout_paid(customer, session_id="cs_bad", **metadata)

    assert row.status == "processed"
    operation = PaymentOperation.objects.get(stripe_checkout_session_id="cs_bad")
    assert (operation.state, operation.effect, operation.cleanup_due) == (
        OperationState.NEEDS_ATTENTION,
        "",
        "refund",
    )
    assert "is not valid" in operation.last_error
    assert Subscription.objects.filter(user=customer).count() == 1


def test_a_checkout_for_an_unknown_user_is_acknowledged_as_unmatched_and_changes_nothing(customer):
    stranger = type(customer)(pk=987_654, email="gone@example.com")

    row = stripe_checkout_paid(stranger)

    assert row.status == "unmatched"
    assert row.unmatched_reason.startswith("Checkout cs_test_1 names no user here (client_reference_id '987654'")
    assert not PaymentOperation.objects.exists()
    assert Subscription.objects.filter(checkout_session_id="cs_test_1").count() == 0


# Cancelling


def test_a_customer_cancel_takes_effect_at_the_period_end_through_the_roll_over_job(user):
    subscription = subscribed(user, "pro")

    cancelled = subscription_cancel(subscription_id=subscription.pk, user=user)

    assert (cancelled.status, cancelled.cancel_at_period_end, cancelled.cancelled_at) == (S.ACTIVE, True, None)
    end = subscription.current_period_end
    with time_machine.travel(end + timedelta(hours=1), tick=False):
        outcomes = jobs.monthly_credits_allocate(now=end + timedelta(hours=1))

    assert outcomes["cancelled"] == 1
    subscription.refresh_from_db()
    assert subscription.status == S.CANCELLED
    assert subscription.cancelled_at == end + timedelta(hours=1)
    (live,) = live_subscriptions(user)
    assert live.tier == "free"
    assert entitlement_of(user) == ("free", ENTITLEMENTS["free"])
    assert not BillingInvoice.objects.exists()


def test_a_customer_cancel_with_stripe_asks_stripe_to_cancel_at_the_period_end_once(
    user, stripe_http, django_capture_on_commit_callbacks
):
    subscription = subscribed(user, "pro", stripe=True)

    with django_capture_on_commit_callbacks(execute=True):
        subscription_cancel(subscription_id=subscription.pk, user=user, reason="Too expensive")
        subscription_cancel(subscription_id=subscription.pk, user=user)

    assert stripe_calls(stripe_http) == [("post", f"subscriptions/sub_{user.pk}")]
    assert stripe_http.requests[0]["form"] == {"cancel_at_period_end": "true"}
    subscription.refresh_from_db()
    assert (subscription.status, subscription.cancel_at_period_end) == (S.ACTIVE, True)
    (row,) = AdminAuditLog.objects.filter(resource_id=str(subscription.pk))
    assert (row.actor, row.new_value["reason"]) == (user, "Too expensive")


def test_staff_cancel_immediately_ends_it_now_and_cancels_it_at_stripe(
    user, staff_user, stripe_http, django_capture_on_commit_callbacks
):
    subscription = subscribed(user, "pro", stripe=True)

    with time_machine.travel(NOW + 3 * DAY, tick=False), django_capture_on_commit_callbacks(execute=True):
        subscription_cancel(subscription_id=subscription.pk, user=staff_user, immediately=True, reason="Chargeback")

    assert stripe_calls(stripe_http) == [("delete", f"subscriptions/sub_{user.pk}")]
    subscription.refresh_from_db()
    assert (subscription.status, subscription.cancelled_at) == (S.CANCELLED, NOW + 3 * DAY)
    (row,) = transition_rows(subscription)
    assert (row.actor, row.new_value["reason"]) == (staff_user, "Chargeback")
    (live,) = live_subscriptions(user)
    assert live.tier == "free"


def test_a_customer_cannot_cancel_immediately(user, stripe_http):
    subscription = subscribed(user, "pro", stripe=True)

    with pytest.raises(DomainError) as refused:
        subscription_cancel(subscription_id=subscription.pk, user=user, immediately=True)

    assert (refused.value.status, refused.value.code) == (422, "immediate_cancel_staff_only")
    subscription.refresh_from_db()
    assert (subscription.status, subscription.cancel_at_period_end) == (S.ACTIVE, False)
    assert stripe_http.requests == []


def test_the_free_tier_cannot_be_cancelled(customer):
    free = Subscription.objects.get(user=customer)

    with pytest.raises(DomainError) as refused:
        subscription_cancel(subscription_id=free.pk, user=customer)

    assert (refused.value.status, refused.value.code) == (422, "free_tier_not_cancellable")
    free.refresh_from_db()
    assert (free.status, free.cancel_at_period_end) == (S.ACTIVE, False)


def test_an_ended_subscription_cannot_be_cancelled_again(user):
    subscription = subscribed(user, "pro", status=S.CANCELLED)

    with pytest.raises(DomainError) as refused:
        subscription_cancel(subscription_id=subscription.pk, user=user)

    assert (refused.value.status, refused.value.code) == (409, "subscription_not_live")


def test_someone_elses_subscription_cannot_be_cancelled(user, other_user):
    subscription = subscribed(user, "pro")

    with pytest.raises(DomainError) as refused:
        subscription_cancel(subscription_id=subscription.pk, user=other_user)

    assert (refused.value.status, refused.value.code) == (404, "subscription_not_found")
    subscription.refresh_from_db()
    assert subscription.cancel_at_period_end is False


def test_a_cancelled_trial_ends_cancelled_rather_than_expired(customer):
    trial = subscription_start(user=customer, tier="pro").subscription
    subscription_cancel(subscription_id=trial.pk, user=customer)

    trial_expire(subscription_id=trial.pk, now=trial.trial_ends_at)

    trial.refresh_from_db()
    assert trial.status == S.CANCELLED
    (live,) = live_subscriptions(customer)
    assert live.tier == "free"


# Renewals and monthly credits


def test_an_annual_plan_is_allocated_month_by_month_exactly_once_per_month(customer):
    with time_machine.travel(NOW, tick=False):
        subscription = subscription_start(user=customer, tier="enterprise_pro", billing_cycle="annual").subscription

    def run_job(at):
        with time_machine.travel(at, tick=False):
            return jobs.monthly_credits_allocate(now=at)

    later_in_month_one = run_job(NOW + 10 * DAY)
    month_two = run_job(add_months(NOW, 1) + timedelta(hours=1))
    month_two_again = run_job(add_months(NOW, 1) + 5 * DAY)
    month_three = run_job(add_months(NOW, 2))

    assert (later_in_month_one["allocated"], month_two["allocated"]) == (0, 1)
    assert (month_two_again["allocated"], month_three["allocated"]) == (0, 1)
    slices = list(
        CreditAllocation.objects.filter(subscription_id=subscription.pk)
        .order_by("period_start")
        .values_list("period_start", "period_end", "amount")
    )
    assert slices == [
        (NOW, add_months(NOW, 1), 250_000),
        (add_months(NOW, 1), add_months(NOW, 2), 250_000),
        (add_months(NOW, 2), add_months(NOW, 3), 250_000),
    ]
    subscription.refresh_from_db()
    assert subscription.current_period_end == add_months(NOW, 12)
    assert BillingInvoice.objects.filter(subscription=subscription).count() == 1


def test_the_free_plan_renews_each_month_with_its_2000_credits_once(db, catalog):
    with time_machine.travel(NOW, tick=False):
        user = account_register(email="bo@example.com", password="correct horse battery staple")
    free = Subscription.objects.get(user=user)
    renewal = add_months(NOW, 1)

    with time_machine.travel(renewal + timedelta(hours=2), tick=False):
        first = jobs.monthly_credits_allocate(now=renewal + timedelta(hours=1))
        second = jobs.monthly_credits_allocate(now=renewal + timedelta(hours=2))

    assert first["renewed"] == 1
    assert (second["renewed"], second["allocated"]) == (0, 0)
    free.refresh_from_db()
    assert (free.status, free.current_period_start, free.current_period_end) == (
        S.ACTIVE,
        renewal,
        add_months(NOW, 2),
    )
    assert list(
        CreditAllocation.objects.filter(subscription_id=free.pk)
        .order_by("period_start")
        .values_list("period_start", "amount")
    ) == [(NOW, 2_000), (renewal, 2_000)]
    assert not BillingInvoice.objects.exists()


def test_an_offline_billed_paid_plan_renews_with_an_invoice_and_its_credits(user):
    subscription = subscribed(user, "pro")
    end = subscription.current_period_end

    outcomes = jobs.monthly_credits_allocate(now=end + timedelta(minutes=5))

    assert outcomes["renewed"] == 1
    subscription.refresh_from_db()
    assert (subscription.current_period_start, subscription.current_period_end) == (end, add_months(end, 1))
    invoice = BillingInvoice.objects.get(subscription=subscription)
    assert (invoice.status, invoice.amount_paid_usd, invoice.period_start) == (
        InvoiceStatus.PAID,
        Decimal("19.00"),
        end,
    )
    assert CreditAllocation.objects.get(subscription_id=subscription.pk, period_start=end).amount == 20_000


def test_a_stripe_billed_plan_waits_for_its_invoice_webhook(user):
    subscription = subscribed(user, "pro", stripe=True)
    end = subscription.current_period_end

    outcomes = jobs.monthly_credits_allocate(now=end + timedelta(minutes=5))

    assert outcomes["awaiting_provider"] == 1
    subscription.refresh_from_db()
    assert subscription.current_period_end == end
    assert not CreditAllocation.objects.exists()


@pytest.mark.parametrize("status", [S.PAST_DUE, S.GRACE_PERIOD, S.SUSPENDED])
def test_a_cancel_at_period_end_takes_effect_even_while_payments_are_behind(user, status):
    subscription = subscribed(user, "pro", status=status, cancel_at_period_end=True)
    end = subscription.current_period_end

    with time_machine.travel(end + timedelta(hours=1), tick=False):
        outcomes = jobs.monthly_credits_allocate(now=end + timedelta(hours=1))

    assert outcomes["cancelled"] == 1
    subscription.refresh_from_db()
    assert subscription.status == S.CANCELLED
    (live,) = live_subscriptions(user)
    assert live.tier == "free"


def test_a_subscription_behind_on_payments_is_left_to_dunning_at_its_period_end(user):
    subscription = subscribed(user, "pro", status=S.PAST_DUE)
    end = subscription.current_period_end

    with time_machine.travel(end + timedelta(hours=1), tick=False):
        outcomes = jobs.monthly_credits_allocate(now=end + timedelta(hours=1))

    assert outcomes["cancelled"] == 0
    subscription.refresh_from_db()
    assert subscription.status == S.PAST_DUE


def test_a_free_subscription_cannot_change_tier_it_starts_one_instead(customer):
    free = live_subscriptions(customer).get()

    with pytest.raises(DomainError) as refused:
        tier_change(subscription_id=free.pk, user=customer, tier="pro")

    assert (refused.value.status, refused.value.code) == (422, "start_a_subscription")
    free.refresh_from_db()
    assert free.tier == "free"
    assert not ProrationEvent.objects.exists()
