"""Coupon limits under real concurrency: threads on PostgreSQL, each with its own connection, racing
for the same coupon row. The final state must be exact, not merely plausible."""

from decimal import Decimal

import pytest

from billing_project.net import ClientInfo
from conftest import run_concurrently
from coupons.codes import Reason
from coupons.models import CouponRedemption, CouponType, CouponUsageLimit, DiscountType, RedemptionStatus
from coupons.services.redemption import CouponRefused, coupon_redeem
from coupons.tests.factories import CampaignCouponFactory, CouponCampaignFactory, CouponFactory
from credits.models import CreditAllocation, CreditSource, UserCreditBalance
from subscriptions.services import account_register, tier_catalog_seed

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


@pytest.fixture
def customers():
    """Registered users (free tier, 2,000 credits each), as many as a test asks for."""
    tier_catalog_seed()

    def make(count: int) -> list:
        return [account_register(email=f"racer{n}@example.com", password=PASSWORD) for n in range(count)]

    return make


def client_of(n: int) -> ClientInfo:
    # One network and device per caller: the race is about the coupon's limits, not fraud signals.
    return ClientInfo(ip=f"198.51.100.{n + 1}", user_agent="pytest", device_fingerprint=f"device-{n}")


def redeem(user, code: str, n: int):
    return coupon_redeem(user=user, code=code, client=client_of(n))


def outcomes(results: list) -> tuple[list[CouponRedemption], list[str]]:
    """The successful redemptions and the refusal codes; anything else fails the test."""
    unexpected = [
        result
        for result in results
        if not isinstance(result, CouponRedemption | CouponRefused)  # e.g. a deadlock or IntegrityError
    ]
    assert unexpected == [], unexpected
    successes = [result for result in results if isinstance(result, CouponRedemption)]
    refusals = [result.code for result in results if isinstance(result, CouponRefused)]
    return successes, refusals


def balance_of(user) -> int:
    return UserCreditBalance.objects.get(user=user).amount


def credits_coupon(credits: int, **fields):
    return CouponFactory(
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.CREDITS,
        discount_value=Decimal(credits),
        **fields,
    )


def test_fifty_users_racing_for_a_coupon_of_ten_uses_get_exactly_ten(customers):
    # given a coupon of 10 uses and 50 users
    coupon = credits_coupon(100, max_uses=10)
    users = customers(50)

    # when all 50 redeem it at once
    results = run_concurrently(lambda n: redeem(users[n], coupon.code, n), list(range(50)))

    # then exactly 10 succeed, the other 40 are refused for the total limit
    successes, refusals = outcomes(results)
    assert len(successes) == 10
    assert refusals == [Reason.MAX_USES_REACHED] * 40
    taken = CouponRedemption.objects.filter(coupon=coupon, status=RedemptionStatus.SUCCESS)
    assert sorted(taken.values_list("use_number", flat=True)) == list(range(1, 11))
    assert taken.values("user").distinct().count() == 10
    assert {redemption.pk for redemption in successes} == set(taken.values_list("pk", flat=True))
    failed = CouponRedemption.objects.filter(coupon=coupon, status=RedemptionStatus.FAILED)
    assert failed.count() == 40
    assert set(failed.values_list("failure_reason", flat=True)) == {Reason.MAX_USES_REACHED}
    assert not failed.filter(use_number__isnull=False).exists()
    usage = CouponUsageLimit.objects.get(coupon=coupon)
    assert (usage.total_uses, usage.unique_users) == (10, 10)
    winners = {redemption.user_id for redemption in successes}
    assert CreditAllocation.objects.filter(source=CreditSource.COUPON).count() == 10
    assert sorted(balance_of(user) for user in users) == [2_000] * 40 + [2_100] * 10
    assert {user.pk for user in users if balance_of(user) == 2_100} == winners


def test_one_user_redeeming_a_once_per_user_coupon_from_ten_threads_succeeds_once(customers):
    coupon = credits_coupon(500, max_uses_per_user=1)
    (user,) = customers(1)

    results = run_concurrently(lambda n: redeem(user, coupon.code, 0), list(range(10)))

    successes, refusals = outcomes(results)
    assert len(successes) == 1
    assert refusals == [Reason.USER_LIMIT_REACHED] * 9
    taken = CouponRedemption.objects.get(coupon=coupon, status=RedemptionStatus.SUCCESS)
    assert (taken.pk, taken.user_id, taken.use_number, taken.user_use_number) == (successes[0].pk, user.pk, 1, 1)
    assert CouponRedemption.objects.filter(coupon=coupon, status=RedemptionStatus.FAILED).count() == 9
    assert CouponUsageLimit.objects.get(coupon=coupon).total_uses == 1
    assert balance_of(user) == 2_000 + 500
    assert CreditAllocation.objects.filter(user=user, source=CreditSource.COUPON).count() == 1


def test_ten_users_racing_for_a_campaign_budget_of_seven_redemptions_get_exactly_seven(customers, settings):
    # given 1,000 credits worth USD 1.00 each redemption, and a campaign budget of USD 7.00
    settings.CREDIT_VALUE_USD = Decimal("0.001")
    campaign = CouponCampaignFactory(budget_usd=Decimal("7.00"))
    coupon = credits_coupon(1_000)
    CampaignCouponFactory(campaign=campaign, coupon=coupon)
    users = customers(10)

    # when the 10 users redeem it at once
    results = run_concurrently(lambda n: redeem(users[n], coupon.code, n), list(range(10)))

    # then 7 fit the budget and the campaign has spent exactly all of it
    successes, refusals = outcomes(results)
    assert len(successes) == 7
    assert refusals == [Reason.CAMPAIGN_BUDGET_EXHAUSTED] * 3
    campaign.refresh_from_db()
    assert campaign.spent_usd == Decimal("7.00")
    taken = CouponRedemption.objects.filter(coupon=coupon, campaign=campaign, status=RedemptionStatus.SUCCESS)
    assert sorted(taken.values_list("use_number", flat=True)) == list(range(1, 8))
    assert CouponUsageLimit.objects.get(coupon=coupon).total_uses == 7
    winners = {redemption.user_id for redemption in successes}
    assert {user.pk: balance_of(user) for user in users} == {
        user.pk: 2_000 + 1_000 if user.pk in winners else 2_000 for user in users
    }


def test_refusals_recorded_while_a_campaign_budget_is_spent_never_deadlock_with_the_redemptions(customers, settings):
    # given a budget for 5 of 30 redemptions: most refusals are recorded while winners hold their locks
    settings.CREDIT_VALUE_USD = Decimal("0.001")
    campaign = CouponCampaignFactory(budget_usd=Decimal("5.00"))
    coupon = credits_coupon(1_000)
    CampaignCouponFactory(campaign=campaign, coupon=coupon)
    users = customers(30)

    results = run_concurrently(lambda n: redeem(users[n], coupon.code, n), list(range(30)))

    # then every caller gets an answer (no deadlock victim), and every refusal is on record
    successes, refusals = outcomes(results)
    assert len(successes) == 5
    assert refusals == [Reason.CAMPAIGN_BUDGET_EXHAUSTED] * 25
    failed = CouponRedemption.objects.filter(coupon=coupon, campaign=campaign, status=RedemptionStatus.FAILED)
    assert failed.count() == 25
    campaign.refresh_from_db()
    assert campaign.spent_usd == Decimal("5.00")
