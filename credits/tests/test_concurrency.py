from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import run_concurrently
from credits.models import CreditAllocation, UserCreditBalance, UserCreditSource
from credits.services import credit_grant
from subscriptions.models import Subscription

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_ten_parallel_grants_give_exactly_ten_times_the_amount(user):
    results = run_concurrently(
        lambda n: credit_grant(user=user, amount=500, source="bonus", reason=f"bonus {n}"), list(range(10))
    )

    assert all(not isinstance(result, Exception) for result in results), results
    assert UserCreditBalance.objects.get(user=user).amount == 5000
    assert CreditAllocation.objects.filter(user=user).count() == 10
    assert sorted(result.balance_after for result in results) == list(range(500, 5001, 500))


def test_ten_parallel_allocations_of_one_period_allocate_once(user):
    now = timezone.now()
    subscription = Subscription.objects.create(
        user=user,
        tier="pro",
        status="active",
        base_price_usd="19.00",
        monthly_credit_allocation=20000,
        current_period_start=now,
        current_period_end=now + timedelta(days=30),
    )

    results = run_concurrently(
        lambda _: credit_grant(
            user=user, amount=20000, source="subscription", subscription=subscription, period_start=now
        ),
        list(range(10)),
    )

    assert all(not isinstance(result, Exception) for result in results), results
    assert sum(result.created for result in results) == 1
    assert UserCreditBalance.objects.get(user=user).amount == 20000
    assert UserCreditSource.objects.filter(user=user).count() == 1
