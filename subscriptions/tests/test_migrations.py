"""credits 0006 turns the ledgers' foreign keys to subscriptions into plain ids, keeping every value,
and subscriptions 0007 fills credits' copy of each user's tier and live subscription."""

import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BEFORE = [("credits", "0005_price_book_dimensions_and_64_bit_usage"), ("subscriptions", "0006_dunning_processing")]
PERIOD = {"current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2026-02-01T00:00:00Z"}


def migrate(targets=None):
    """Migrates to `targets` (every app's latest without) and returns the models as they are there."""
    executor = MigrationExecutor(connection)
    return executor.migrate(targets or executor.loader.graph.leaf_nodes()).apps


@pytest.fixture
def before_the_change():
    old = migrate(BEFORE)
    yield old
    migrate()  # whatever the test did, the database ends at the latest schema


def subscription(old, user, status, tier="pro"):
    return old.get_model("subscriptions", "Subscription").objects.create(
        user_id=user.pk, tier=tier, status=status, base_price_usd=19, monthly_credit_allocation=20_000, **PERIOD
    )


def test_ledgers_keep_their_subscription_ids_and_balances_get_the_tier(before_the_change):
    old = before_the_change
    users = old.get_model("auth", "User").objects
    payer, newcomer, stranger = (users.create(username=name, email=f"{name}@example.com") for name in "abc")
    ended = subscription(old, payer, "cancelled", tier="pro_max")
    live = subscription(old, payer, "suspended")
    entitlements = old.get_model("subscriptions", "UserEntitlement").objects
    entitlements.create(user_id=payer.pk, tier="free", activated_at="2026-01-10T00:00:00Z")
    entitlements.create(user_id=newcomer.pk, tier="pro", activated_at="2026-01-10T00:00:00Z")
    old.get_model("credits", "UserCreditBalance").objects.create(id=uuid.uuid4(), user_id=payer.pk, amount=19_930)
    allocation = old.get_model("credits", "CreditAllocation").objects.create(
        id=uuid.uuid4(), user_id=payer.pk, subscription=ended, amount=20_000, source="subscription"
    )
    deduction = old.get_model("credits", "CreditDeductionLedger").objects.create(
        id=uuid.uuid4(),
        user_id=payer.pk,
        subscription=ended,
        amount=70,
        balance_before=20_000,
        balance_after=19_930,
        reason="inference",
    )
    provider = old.get_model("credits", "Provider").objects.create(id=uuid.uuid4(), name="openai", api_type="openai")
    usage = old.get_model("credits", "TokenUsageLedger").objects.create(
        id=uuid.uuid4(),
        request_id=uuid.uuid4(),
        user_id=payer.pk,
        subscription=live,
        provider=provider,
        model_name="gpt-4o",
        input_tokens=1000,
        output_tokens=2000,
        total_tokens=3000,
        vendor_cost=Decimal("0.035"),
        margin_multiplier=Decimal("2"),
        credit_value_usd=Decimal("0.07"),
        credits_deducted=70,
        gross_margin_usd=Decimal("0.035"),
        request_type="chat",
        request_started_at="2026-01-15T00:00:00Z",
        request_completed_at="2026-01-15T00:00:01Z",
    )

    new = migrate()

    assert new.get_model("credits", "CreditAllocation").objects.get(pk=allocation.pk).subscription_id == ended.pk
    assert new.get_model("credits", "CreditDeductionLedger").objects.get(pk=deduction.pk).subscription_id == ended.pk
    assert new.get_model("credits", "TokenUsageLedger").objects.get(pk=usage.pk).subscription_id == live.pk
    balances = new.get_model("credits", "UserCreditBalance").objects
    # the payer: their entitlement's tier (free while suspended), their live subscription, their credits
    assert balances.filter(user_id=payer.pk).values_list("tier", "subscription_id", "amount").get() == (
        "free",
        live.pk,
        19_930,
    )
    assert balances.filter(user_id=newcomer.pk).values_list("tier", "subscription_id", "amount").get() == (
        "pro",
        None,
        0,
    )
    assert not balances.filter(user_id=stranger.pk).exists()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' "
            "AND confrelid = 'subscriptions_subscription'::regclass AND conrelid::regclass::text LIKE 'credits_%%'"
        )
        assert cursor.fetchall() == []
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'credits_tokenusageledger'::regclass")
        assert ("credits_tokenusageledger_append_only",) in cursor.fetchall()
