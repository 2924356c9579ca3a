"""`coupons/redeem/` as clients call it: retries with an Idempotency-Key redeem once."""

import pytest

from coupons.models import CouponRedemption, CouponType, DiscountType
from coupons.tests.conftest import REDEEM_URL
from coupons.tests.factories import CouponFactory
from credits.models import UserCreditBalance

pytestmark = pytest.mark.django_db


@pytest.fixture
def credits_coupon():
    return CouponFactory(
        code="RETRY1K",
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.CREDITS,
        discount_value=1000,
        max_uses_per_user=5,
    )


def test_a_retried_redeem_with_the_same_idempotency_key_redeems_once(customer, customer_client, credits_coupon):
    balance = UserCreditBalance.objects.get(user=customer).amount

    first = customer_client.post(REDEEM_URL, {"code": "RETRY1K"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = customer_client.post(REDEEM_URL, {"code": "RETRY1K"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert CouponRedemption.objects.filter(user=customer).count() == 1
    assert UserCreditBalance.objects.get(user=customer).amount == balance + 1000


def test_a_refusal_under_an_idempotency_key_is_recorded_once_and_replayed(customer, customer_client):
    first = customer_client.post(REDEEM_URL, {"code": "NOPE"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    again = customer_client.post(REDEEM_URL, {"code": "NOPE"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    assert (first.status_code, again.status_code) == (422, 422)
    assert again.json()["code"] == "coupon_not_found"
    assert CouponRedemption.objects.filter(user=customer, failure_reason="coupon_not_found").count() == 1


def test_redeem_needs_a_signed_in_user(api_client, credits_coupon):
    response = api_client.post(REDEEM_URL, {"code": "RETRY1K"}, format="json")

    assert response.status_code == 401
    assert not CouponRedemption.objects.exists()
