"""coupon.redeemed: one event per successful redemption (at once, or when the checkout holding the
coupon is paid); none for a refusal or a replayed request."""

from decimal import Decimal

import pytest

from billing_project.models import OutboundEvent
from coupons.models import CouponRedemption, CouponType, DiscountType
from coupons.tests.conftest import REDEEM_URL
from coupons.tests.factories import CouponFactory

pytestmark = pytest.mark.django_db


def events() -> list[OutboundEvent]:
    return list(OutboundEvent.objects.filter(type="coupon.redeemed").order_by("created_at"))


def test_a_credits_coupon_redeemed_emits_coupon_redeemed_once_with_its_credits(customer, customer_client):
    coupon = CouponFactory(
        code="WELCOME1K",
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.CREDITS,
        discount_value=1000,
    )

    first = customer_client.post(REDEEM_URL, {"code": "welcome1k"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = customer_client.post(REDEEM_URL, {"code": "welcome1k"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert (first.status_code, again.status_code) == (201, 201)
    redemption = CouponRedemption.objects.get(user=customer)
    (event,) = events()
    assert (event.subject, event.user) == (f"coupon:{coupon.pk}", customer)
    assert event.data == {
        "redemption_id": str(redemption.pk),
        "coupon_id": str(coupon.pk),
        "coupon_code": "WELCOME1K",
        "coupon_type": "fixed_amount_discount",
        "discount_type": "credits",
        "user_id": str(customer.pk),
        "subscription_id": None,
        "discount_applied_usd": "0.00",
        "final_amount_usd": "0.00",
        "currency": "usd",
        "credits_granted": 1000,
        "months_granted": 0,
        "license_id": None,
        "redeemed_at": redemption.redemption_date.isoformat(),
    }


def test_a_refused_redemption_emits_nothing(customer, customer_client):
    CouponFactory(code="USEDUP", discount_type=DiscountType.CREDITS, discount_value=1000, is_active=False)

    response = customer_client.post(REDEEM_URL, {"code": "USEDUP"}, format="json")

    assert response.status_code == 422
    assert CouponRedemption.objects.filter(user=customer, status="failed").count() == 1
    assert not events()


def test_a_coupon_held_by_a_checkout_is_redeemed_when_the_checkout_is_paid(customer, customer_client):
    coupon = CouponFactory(discount_value=Decimal("20.00"))

    response = customer_client.post(
        "/api/v1/subscriptions/", {"tier": "enterprise_pro", "coupon_code": coupon.code}, format="json"
    )

    assert response.status_code == 201, response.content
    subscription_id = response.json()["subscription"]["id"]
    (event,) = events()
    assert (event.data["coupon_code"], event.data["subscription_id"]) == (coupon.code, subscription_id)
    assert (event.data["discount_applied_usd"], event.data["final_amount_usd"]) == ("29.80", "119.20")
