"""The database itself refuses invalid rows, whatever code writes them."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from credits.models import CreditAllocation
from subscriptions.models import Subscription

pytestmark = pytest.mark.django_db


def subscription_row(user, **overrides) -> Subscription:
    now = timezone.now()
    fields = {
        "user": user,
        "tier": "pro",
        "status": "active",
        "base_price_usd": "19.00",
        "monthly_credit_allocation": 20000,
        "current_period_start": now,
        "current_period_end": now + timedelta(days=30),
    }
    return Subscription(**{**fields, **overrides})


@pytest.mark.parametrize("field", ["tier", "status", "billing_cycle"])
def test_an_invalid_enumeration_value_is_refused_by_the_database(user, field):
    with pytest.raises(IntegrityError), transaction.atomic():
        subscription_row(user, **{field: "platinum"}).save()


def test_a_second_live_subscription_is_refused(user):
    subscription_row(user).save()

    with pytest.raises(IntegrityError), transaction.atomic():
        subscription_row(user, tier="pro_max", status="trial").save()


def test_a_cancelled_subscription_does_not_block_a_new_live_one(user):
    subscription_row(user, status="cancelled").save()
    subscription_row(user, status="expired").save()

    subscription_row(user).save()

    assert Subscription.objects.filter(user=user).count() == 3


def test_a_second_allocation_for_the_same_period_is_refused(user):
    subscription = subscription_row(user)
    subscription.save()
    allocation = {
        "user": user,
        "subscription_id": subscription.pk,
        "amount": 20000,
        "source": "subscription",
        "period_start": subscription.current_period_start,
    }
    CreditAllocation.objects.create(**allocation)

    with pytest.raises(IntegrityError), transaction.atomic():
        CreditAllocation.objects.create(**allocation)
    CreditAllocation.objects.create(**{**allocation, "source": "proration"})  # another source is another row


def test_a_period_that_ends_before_it_starts_is_refused(user):
    now = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic():
        subscription_row(user, current_period_start=now, current_period_end=now - timedelta(days=1)).save()


def test_a_returning_customer_keeps_their_stripe_customer_id(user, other_user):
    subscription_row(user, status="cancelled", stripe_customer_id="cus_1").save()

    subscription_row(user, stripe_customer_id="cus_1").save()

    with pytest.raises(IntegrityError), transaction.atomic():
        subscription_row(other_user, stripe_customer_id="cus_1").save()  # two live rows on one customer


def test_a_successful_redemption_must_take_a_use_number(user):
    from coupons.models import Coupon, CouponRedemption

    coupon = Coupon.objects.create(
        code="TEN",
        coupon_type="percentage_discount",
        discount_type="percentage",
        discount_value=10,
        valid_from=timezone.now(),
    )
    row = {"coupon": coupon, "coupon_code": "TEN", "user": user, "redemption_date": timezone.now()}

    with pytest.raises(IntegrityError), transaction.atomic():
        CouponRedemption.objects.create(**row, status="success")
    CouponRedemption.objects.create(**row, status="failed", failure_reason="expired")
    CouponRedemption.objects.create(**row, status="success", use_number=1, user_use_number=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        CouponRedemption.objects.create(**row, status="success", use_number=1, user_use_number=2)
