"""Tier changes with proration: the pure arithmetic (SPEC section 2) and the service that applies it."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
import time_machine
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from audit.models import AdminAuditLog
from billing_project.errors import DomainError
from billing_project.money import usd_round
from credits.models import CreditAllocation, CreditSource, UserCreditBalance
from subscriptions import jobs, proration
from subscriptions.catalog import TIERS
from subscriptions.models import (
    BillingInvoice,
    ChangeType,
    InvoiceStatus,
    PaymentStatus,
    PaymentTransaction,
    ProrationEvent,
    ProrationStatus,
    Subscription,
    SubscriptionStatus,
    UserEntitlement,
)
from subscriptions.services import entitlement_activate, tier_catalog_seed, tier_change, tier_change_preview
from subscriptions.services.lifecycle import period_credits_allocate
from subscriptions.tests.factories import SubscriptionFactory

ENTITLEMENTS = {spec["tier"]: spec["entitlements"] for spec in TIERS}
PRICES = {spec["tier"]: spec["monthly_price_usd"] for spec in TIERS}
CREDITS = {spec["tier"]: spec["monthly_credit_allocation"] for spec in TIERS}
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def catalog(db):
    tier_catalog_seed()


def subscribed(user, tier="pro", *, start=START, days=30, stripe=False, **fields) -> Subscription:
    """A paid subscription of `tier` for [start, start + days) with its period's credits and the
    tier's entitlements. Offline-billed unless `stripe` (then it carries Stripe customer and
    subscription ids)."""
    defaults = {
        "base_price_usd": PRICES[tier],
        "monthly_credit_allocation": CREDITS[tier],
        "current_period_start": start,
        "current_period_end": start + days * DAY,
        "stripe_customer_id": f"cus_{user.pk}" if stripe else None,
        "stripe_subscription_id": f"sub_{user.pk}" if stripe else None,
    }
    subscription = SubscriptionFactory(user=user, tier=tier, **{**defaults, **fields})
    period_credits_allocate(subscription=subscription, at=start)
    entitlement_activate(user=user, tier=tier)
    return subscription


def balance_of(user) -> int:
    return UserCreditBalance.objects.filter(user=user).values_list("amount", flat=True).first() or 0


def state_of(subscription: Subscription) -> dict:
    """Everything a tier change could write, to prove that one wrote nothing."""
    subscription.refresh_from_db()
    return {
        "subscription": (
            subscription.tier,
            subscription.base_price_usd,
            subscription.monthly_credit_allocation,
            subscription.scheduled_tier,
            subscription.updated_at,
        ),
        "entitlement": UserEntitlement.objects.filter(user=subscription.user).values_list("tier", flat=True).first(),
        "balance": balance_of(subscription.user),
        "proration_events": ProrationEvent.objects.count(),
        "allocations": CreditAllocation.objects.count(),
        "invoices": BillingInvoice.objects.count(),
        "payments": PaymentTransaction.objects.count(),
        "audit_rows": AdminAuditLog.objects.count(),
    }


def upgrade(old_price, new_price, *, seconds_total, seconds_left, old_credits=0, new_credits=0):
    return proration.upgrade(
        old_price_usd=Decimal(old_price),
        new_price_usd=Decimal(new_price),
        old_credits=old_credits,
        new_credits=new_credits,
        period_start=START,
        period_end=START + timedelta(seconds=seconds_total),
        at=START + timedelta(seconds=seconds_total - seconds_left),
    )


# The arithmetic


def test_the_spec_seed_check_pro_to_pro_max_with_15_of_30_days_left():
    numbers = upgrade(
        "19", "39", old_credits=20_000, new_credits=50_000, seconds_total=30 * 86_400, seconds_left=15 * 86_400
    )

    assert numbers == proration.Proration(
        days_remaining=15,
        days_in_cycle=30,
        unused_credit_value_usd=Decimal("9.50"),
        new_tier_prorated_cost_usd=Decimal("19.50"),
        net_charge_usd=Decimal("10.00"),
        credits_adjustment=15_000,
    )


def test_money_is_rounded_half_up_to_the_cent():
    numbers = upgrade("0.05", "1.25", seconds_total=100, seconds_left=50)

    # 0.025 and 0.625: half-even would give 0.02 and 0.62
    assert numbers.unused_credit_value_usd == Decimal("0.03")
    assert numbers.new_tier_prorated_cost_usd == Decimal("0.63")
    assert numbers.net_charge_usd == Decimal("0.60")


def test_credits_are_rounded_down_to_whole_credits():
    numbers = upgrade("10", "20", old_credits=0, new_credits=1_000, seconds_total=3, seconds_left=2)

    assert numbers.credits_adjustment == 666  # 666.67 rounded down


def test_the_fraction_counts_seconds_not_whole_days():
    one_second_gone = upgrade("0", "86400", new_credits=86_400, seconds_total=86_400, seconds_left=86_399)

    assert one_second_gone.new_tier_prorated_cost_usd == Decimal("86399.00")
    assert one_second_gone.credits_adjustment == 86_399
    assert (one_second_gone.days_remaining, one_second_gone.days_in_cycle) == (1, 1)


def test_the_fraction_left_is_clamped_to_the_period():
    end = START + 30 * DAY

    assert proration.fraction_left(period_start=START, period_end=end, at=START - DAY) == 1
    assert proration.fraction_left(period_start=START, period_end=end, at=end + DAY) == 0
    assert proration.fraction_left(period_start=START, period_end=end, at=START + 10 * DAY) == Fraction(2, 3)


THIRTY_DAYS = 30 * 86_400
THIRTEEN_HOURS_TWELVE = 13 * 3600 + 12 * 60


def test_pro_to_pro_max_with_13h12m_left_of_30_days_grants_exactly_550_credits():
    # 30,000 x 47,520 / 2,592,000 = 550 exactly; dividing first gave 549.99... and 549
    numbers = upgrade(
        "19",
        "39",
        old_credits=20_000,
        new_credits=50_000,
        seconds_total=THIRTY_DAYS,
        seconds_left=THIRTEEN_HOURS_TWELVE,
    )

    assert numbers.credits_adjustment == 550


def test_pro_max_to_enterprise_pro_with_13h12m_left_rounds_the_exact_half_cent_up():
    # 39 x 11/600 = 0.715 exactly -> 0.72; 149 x 11/600 = 2.7316... -> 2.73
    numbers = upgrade("39", "149", seconds_total=THIRTY_DAYS, seconds_left=THIRTEEN_HOURS_TWELVE)

    assert numbers.unused_credit_value_usd == Decimal("0.72")
    assert numbers.new_tier_prorated_cost_usd == Decimal("2.73")
    assert numbers.net_charge_usd == Decimal("2.01")


def test_all_300_exact_half_cents_at_39_usd_round_up():
    # 39 x left / 30 days is an exact odd number of half cents for the 300 odd multiples of 13 half
    # cents below 39 USD; dividing first rounded 16 of them down.
    total = THIRTY_DAYS * 1_000_000
    for half_cents in range(13, 7_800, 26):
        left = Fraction(half_cents, 200) / 39 * total
        assert left.denominator == 1
        numbers = proration.upgrade(
            old_price_usd=Decimal("39"),
            new_price_usd=Decimal("39"),
            old_credits=0,
            new_credits=0,
            period_start=START,
            period_end=START + timedelta(microseconds=total),
            at=START + timedelta(microseconds=total - int(left)),
        )
        assert numbers.unused_credit_value_usd == Decimal(half_cents + 1) / 200


def _reference(price: Decimal, credits_delta: int, total_us: int, left_us: int) -> tuple[Decimal, int]:
    """Exact rationals, rounded once: half-up to cents, credits down."""
    value = Fraction(price) * Fraction(left_us, total_us) * 100
    cents = (2 * value.numerator + value.denominator) // (2 * value.denominator)
    return Decimal(cents) / 100, (credits_delta * left_us) // total_us


@hypothesis_settings(max_examples=500, deadline=None)
@given(
    price=st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False, allow_infinity=False),
    credits_delta=st.integers(min_value=0, max_value=10_000_000),
    total_us=st.integers(min_value=1, max_value=400 * 86_400 * 1_000_000),
    data=st.data(),
)
def test_proration_equals_the_exact_fraction_reference_at_every_price_and_period(price, credits_delta, total_us, data):
    left_us = data.draw(st.integers(min_value=0, max_value=total_us))

    numbers = proration.upgrade(
        old_price_usd=price,
        new_price_usd=price,
        old_credits=0,
        new_credits=credits_delta,
        period_start=START,
        period_end=START + timedelta(microseconds=total_us),
        at=START + timedelta(microseconds=total_us - left_us),
    )

    expected_usd, expected_credits = _reference(price, credits_delta, total_us, left_us)
    assert numbers.unused_credit_value_usd == numbers.new_tier_prorated_cost_usd == expected_usd
    assert numbers.credits_adjustment == expected_credits


def test_a_downgrade_quote_charges_and_grants_nothing():
    numbers = proration.downgrade(period_start=START, period_end=START + 30 * DAY, at=START + 20 * DAY)

    assert (numbers.days_remaining, numbers.days_in_cycle) == (10, 30)
    assert numbers.net_charge_usd == numbers.unused_credit_value_usd == numbers.new_tier_prorated_cost_usd == 0
    assert numbers.credits_adjustment == 0


prices = st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False, allow_infinity=False)
credits = st.integers(min_value=0, max_value=2_000_000)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    old_price=prices,
    new_price=prices,
    old_credits=credits,
    new_credits=credits,
    seconds_total=st.integers(min_value=1, max_value=400 * 86_400),
    data=st.data(),
)
def test_the_net_charge_is_new_minus_unused_and_never_negative(
    old_price, new_price, old_credits, new_credits, seconds_total, data
):
    seconds_left = data.draw(st.integers(min_value=0, max_value=seconds_total))

    numbers = upgrade(
        old_price,
        new_price,
        old_credits=old_credits,
        new_credits=new_credits,
        seconds_total=seconds_total,
        seconds_left=seconds_left,
    )

    assert numbers.net_charge_usd >= 0
    assert numbers.net_charge_usd == max(numbers.new_tier_prorated_cost_usd - numbers.unused_credit_value_usd, 0)
    if new_price >= old_price:
        assert numbers.net_charge_usd == numbers.new_tier_prorated_cost_usd - numbers.unused_credit_value_usd
    for amount in (numbers.unused_credit_value_usd, numbers.new_tier_prorated_cost_usd, numbers.net_charge_usd):
        assert amount == amount.quantize(Decimal("0.01"))
    assert numbers.new_tier_prorated_cost_usd <= new_price
    assert 0 <= numbers.credits_adjustment <= max(new_credits - old_credits, 0)


# The service


@pytest.mark.usefixtures("catalog")
def test_upgrade_pro_to_pro_max_mid_period_charges_10_00_and_grants_15000_credits(user):
    subscription = subscribed(user, "pro")
    middle = START + 15 * DAY

    with time_machine.travel(middle, tick=False):
        quote = tier_change_preview(subscription_id=subscription.pk, user=user, tier="pro_max")
        event = tier_change(subscription_id=subscription.pk, user=user, tier="pro_max").event

    assert quote.change_type == ChangeType.UPGRADE
    assert quote.effective_date == middle
    assert (
        quote.numbers.unused_credit_value_usd,
        quote.numbers.new_tier_prorated_cost_usd,
        quote.numbers.net_charge_usd,
        quote.numbers.credits_adjustment,
    ) == (Decimal("9.50"), Decimal("19.50"), Decimal("10.00"), 15_000)
    event.refresh_from_db()
    assert (event.from_tier, event.to_tier, event.change_type, event.status) == (
        "pro",
        "pro_max",
        ChangeType.UPGRADE,
        ProrationStatus.APPLIED,
    )
    assert (event.days_remaining, event.days_in_cycle, event.effective_date) == (15, 30, middle)
    assert (event.unused_credit_value_usd, event.new_tier_prorated_cost_usd, event.net_charge_usd) == (
        Decimal("9.50"),
        Decimal("19.50"),
        Decimal("10.00"),
    )
    assert event.credits_adjustment == 15_000
    invoice = BillingInvoice.objects.get(subscription=subscription)
    assert (invoice.amount_due_usd, invoice.amount_paid_usd, invoice.status) == (
        Decimal("10.00"),
        Decimal("10.00"),
        InvoiceStatus.PAID,
    )
    assert (invoice.period_start, invoice.period_end) == (middle, START + 30 * DAY)
    assert PaymentTransaction.objects.get(invoice=invoice).status == PaymentStatus.SUCCEEDED
    allocation = CreditAllocation.objects.get(source=CreditSource.PRORATION)
    assert (allocation.user, allocation.subscription_id, allocation.amount) == (user, subscription.pk, 15_000)
    assert allocation.expires_at == START + 30 * DAY
    assert balance_of(user) == 20_000 + 15_000
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.base_price_usd, subscription.monthly_credit_allocation) == (
        "pro_max",
        Decimal("39.00"),
        50_000,
    )
    assert (subscription.current_period_start, subscription.current_period_end) == (START, START + 30 * DAY)
    entitlement = UserEntitlement.objects.get(user=user)
    assert (entitlement.tier, entitlement.entitlements) == ("pro_max", ENTITLEMENTS["pro_max"])
    audit = AdminAuditLog.objects.filter(resource_id=str(subscription.pk)).latest("sequence")
    assert audit.new_value["proration_event_id"] == str(event.pk)
    assert audit.previous_value["tier"] == "pro"


@pytest.mark.usefixtures("catalog")
def test_a_downgrade_is_scheduled_for_the_period_end_and_charges_nothing_now(user):
    subscription = subscribed(user, "pro_max")
    before = state_of(subscription)

    with time_machine.travel(START + 10 * DAY, tick=False):
        event = tier_change(subscription_id=subscription.pk, user=user, tier="pro").event

    event.refresh_from_db()
    assert (event.change_type, event.status, event.effective_date) == (
        ChangeType.DOWNGRADE,
        ProrationStatus.PENDING,
        START + 30 * DAY,
    )
    assert (event.net_charge_usd, event.credits_adjustment, event.days_remaining) == (Decimal("0.00"), 0, 20)
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.scheduled_tier, subscription.base_price_usd) == (
        "pro_max",
        "pro",
        Decimal("39.00"),
    )
    assert not BillingInvoice.objects.exists()
    assert not PaymentTransaction.objects.exists()
    assert CreditAllocation.objects.count() == before["allocations"]
    assert balance_of(user) == before["balance"] == 50_000
    assert UserEntitlement.objects.get(user=user).tier == "pro_max"


@pytest.mark.usefixtures("catalog")
def test_a_scheduled_downgrade_applies_at_renewal_with_the_lower_tier_price_and_credits(user):
    subscription = subscribed(user, "pro_max")
    with time_machine.travel(START + 10 * DAY, tick=False):
        event = tier_change(subscription_id=subscription.pk, user=user, tier="pro").event
    renewal = START + 30 * DAY

    outcomes = jobs.monthly_credits_allocate(now=renewal + timedelta(hours=1))

    assert outcomes["renewed"] == 1
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.scheduled_tier, subscription.status) == ("pro", "", "active")
    assert (subscription.base_price_usd, subscription.monthly_credit_allocation) == (Decimal("19.00"), 20_000)
    assert (subscription.current_period_start, subscription.current_period_end) == (renewal, START + 60 * DAY)
    event.refresh_from_db()
    assert event.status == ProrationStatus.APPLIED
    invoice = BillingInvoice.objects.get(subscription=subscription)
    assert (invoice.amount_paid_usd, invoice.status, invoice.period_start) == (
        Decimal("19.00"),
        InvoiceStatus.PAID,
        renewal,
    )
    allocation = CreditAllocation.objects.get(subscription_id=subscription.pk, period_start=renewal)
    assert (allocation.amount, allocation.source) == (20_000, CreditSource.SUBSCRIPTION)
    entitlement = UserEntitlement.objects.get(user=user)
    assert (entitlement.tier, entitlement.entitlements) == ("pro", ENTITLEMENTS["pro"])


@pytest.mark.usefixtures("catalog")
def test_a_preview_writes_nothing(user):
    subscription = subscribed(user, "pro")
    before = state_of(subscription)

    with time_machine.travel(START + 15 * DAY, tick=False):
        to_pro_max = tier_change_preview(subscription_id=subscription.pk, user=user, tier="pro_max")
        to_enterprise = tier_change_preview(subscription_id=subscription.pk, user=user, tier="enterprise_pro")

    assert to_pro_max.numbers.net_charge_usd == Decimal("10.00")
    assert to_enterprise.numbers.net_charge_usd == Decimal("65.00")  # (149 - 19) / 2
    assert to_enterprise.numbers.credits_adjustment == 115_000  # (250,000 - 20,000) / 2
    assert state_of(subscription) == before


@pytest.mark.usefixtures("catalog")
@pytest.mark.parametrize(
    ("tier", "status", "code"),
    [
        ("pro", 422, "same_tier"),
        ("free", 422, "tier_not_subscribable"),
        ("perpetual", 422, "tier_not_subscribable"),
    ],
)
def test_a_change_to_an_unsellable_tier_is_refused_and_writes_nothing(user, tier, status, code):
    subscription = subscribed(user, "pro")
    before = state_of(subscription)

    for change in (tier_change_preview, tier_change):
        with pytest.raises(DomainError) as refused:
            change(subscription_id=subscription.pk, user=user, tier=tier)

        assert (refused.value.status, refused.value.code) == (status, code)
    assert state_of(subscription) == before


@pytest.mark.usefixtures("catalog")
@pytest.mark.parametrize(
    "status",
    [
        SubscriptionStatus.TRIAL,
        SubscriptionStatus.PAST_DUE,
        SubscriptionStatus.GRACE_PERIOD,
        SubscriptionStatus.SUSPENDED,
    ],
)
def test_only_an_active_subscription_changes_tier(user, status):
    subscription = subscribed(user, "pro", status=status)
    before = state_of(subscription)

    with pytest.raises(DomainError) as refused:
        tier_change(subscription_id=subscription.pk, user=user, tier="pro_max")

    assert (refused.value.status, refused.value.code) == (409, "subscription_not_active")
    assert state_of(subscription) == before


@pytest.mark.usefixtures("catalog")
def test_someone_elses_subscription_is_not_found(user, other_user):
    subscription = subscribed(user, "pro")

    with pytest.raises(DomainError) as refused:
        tier_change_preview(subscription_id=subscription.pk, user=other_user, tier="pro_max")

    assert (refused.value.status, refused.value.code) == (404, "subscription_not_found")


@pytest.mark.usefixtures("catalog")
def test_an_upgrade_with_stripe_needs_a_card_on_file(user, stripe_http):
    subscription = subscribed(user, "pro")
    before = state_of(subscription)

    with time_machine.travel(START + 15 * DAY, tick=False), pytest.raises(DomainError) as refused:
        tier_change(subscription_id=subscription.pk, user=user, tier="pro_max")

    assert (refused.value.status, refused.value.code) == (402, "payment_method_required")
    assert state_of(subscription) == before
    assert stripe_http.requests == []


@pytest.mark.usefixtures("catalog")
def test_an_annual_upgrade_prorates_money_over_the_year_and_credits_over_the_month(user):
    subscription = subscribed(user, "pro", billing_cycle="annual", base_price_usd=Decimal("190"), days=365)
    # START is 2025-03-01: the monthly slice is March (31 days); 15.5 days of it are left.
    at = START + timedelta(days=15, hours=12)

    with time_machine.travel(at, tick=False):
        event = tier_change(subscription_id=subscription.pk, user=user, tier="pro_max").event

    microsecond = timedelta(microseconds=1)
    fraction = Fraction((365 * DAY - (at - START)) // microsecond, 365 * DAY // microsecond)
    assert event.unused_credit_value_usd == usd_round(190 * fraction)
    assert event.new_tier_prorated_cost_usd == usd_round(390 * fraction)
    assert event.credits_adjustment == 15_000  # 30,000 x 15.5 / 31
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.base_price_usd) == ("pro_max", Decimal("390.00"))
    allocation = CreditAllocation.objects.get(source=CreditSource.PRORATION)
    assert allocation.expires_at == datetime(2025, 4, 1, 12, 0, tzinfo=UTC)


@pytest.mark.usefixtures("catalog")
def test_staff_may_change_a_customers_tier_and_are_named_in_the_audit_row(user, staff_user):
    subscription = subscribed(user, "pro")

    with time_machine.travel(START + 15 * DAY, tick=False):
        event = tier_change(subscription_id=subscription.pk, user=staff_user, tier="pro_max").event

    assert event.status == ProrationStatus.APPLIED
    assert event.user == user
    audit = AdminAuditLog.objects.filter(resource_id=str(subscription.pk)).latest("sequence")
    assert audit.actor == staff_user


@pytest.mark.usefixtures("catalog")
def test_a_later_downgrade_replaces_the_scheduled_one_and_only_it_applies_at_renewal(user):
    subscription = subscribed(user, "enterprise_pro")
    with time_machine.travel(START + 5 * DAY, tick=False):
        replaced = tier_change(subscription_id=subscription.pk, user=user, tier="pro_max").event
    with time_machine.travel(START + 6 * DAY, tick=False):
        scheduled = tier_change(subscription_id=subscription.pk, user=user, tier="pro").event

    jobs.monthly_credits_allocate(now=START + 30 * DAY)

    replaced.refresh_from_db()
    scheduled.refresh_from_db()
    assert (replaced.status, scheduled.status) == (ProrationStatus.REVERSED, ProrationStatus.APPLIED)
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.base_price_usd) == ("pro", Decimal("19.00"))


@pytest.mark.usefixtures("catalog")
def test_an_upgrade_cancels_a_scheduled_downgrade(user):
    subscription = subscribed(user, "pro_max")
    with time_machine.travel(START + 5 * DAY, tick=False):
        downgrade = tier_change(subscription_id=subscription.pk, user=user, tier="pro").event
    with time_machine.travel(START + 15 * DAY, tick=False):
        upgrade_event = tier_change(subscription_id=subscription.pk, user=user, tier="enterprise_pro").event

    downgrade.refresh_from_db()
    assert downgrade.status == ProrationStatus.REVERSED
    assert upgrade_event.status == ProrationStatus.APPLIED
    assert upgrade_event.net_charge_usd == Decimal("55.00")  # (149 - 39) / 2
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.scheduled_tier) == ("enterprise_pro", "")
    assert not ProrationEvent.objects.filter(status=ProrationStatus.PENDING).exists()
