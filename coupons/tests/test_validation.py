"""`coupons/validate/`: the steps of SPEC 4 in their order, each with its reason code, the discount
preview, and proof that validating writes nothing."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import AdminAuditLog
from billing_project.email_verification import email_verification_token, email_verify
from coupons.api.throttles import CouponIpRateThrottle, CouponUserRateThrottle
from coupons.models import (
    CouponAnalyticsSnapshot,
    CouponCampaign,
    CouponFraudDetection,
    CouponRedemption,
    CouponType,
    CouponUsageLimit,
    DiscountType,
    ValidationRuleType,
)
from coupons.tests.conftest import REDEEM_URL, VALIDATE_URL
from coupons.tests.factories import (
    CampaignCouponFactory,
    CouponCampaignFactory,
    CouponFactory,
    CouponRedemptionFactory,
    CouponValidationRuleFactory,
)
from credits.models import UserCreditBalance
from subscriptions.models import PaymentStatus, PaymentTransaction, Subscription
from subscriptions.tests.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _roomy_throttles(monkeypatch):
    for throttle in (CouponUserRateThrottle, CouponIpRateThrottle):
        monkeypatch.setattr(throttle, "THROTTLE_RATES", {"coupon": "1000/min"})


def _validate(client, **body):
    response = client.post(
        VALIDATE_URL, {"code": "LADDER", "tier": "pro", "billing_cycle": "monthly", **body}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def _paid_subscription(user):
    Subscription.objects.filter(user=user).delete()
    return SubscriptionFactory(user=user, stripe_customer_id=None, stripe_subscription_id=None)


def test_each_validation_step_answers_its_reason_in_the_spec_order(customer, customer_client, other_user):
    """A coupon that breaks every rule at once; fixing the rule named each time reveals the next,
    so the reasons come out in exactly the order of SPEC 4."""
    now = timezone.now()
    campaign = CouponCampaignFactory(is_active=False, budget_usd=Decimal("10.00"))
    coupon = CouponFactory(
        code="LADDER",
        coupon_type=CouponType.PERCENTAGE_DISCOUNT,
        discount_type=DiscountType.PERCENTAGE,
        discount_value=Decimal("20"),
        deleted_at=now,
        is_active=False,
        valid_from=now + timedelta(days=1),
        max_uses=1,
        max_uses_per_user=1,
        applicable_tiers=["enterprise_max"],
        applicable_billing_cycles=["annual"],
        min_purchase_usd=Decimal("100.00"),
        new_customers_only=True,
    )
    CampaignCouponFactory(campaign=campaign, coupon=coupon)
    CouponRedemptionFactory(coupon=coupon, user=other_user, use_number=1)
    CouponRedemptionFactory(coupon=coupon, user=customer, use_number=2)
    rules = {
        rule_type: CouponValidationRuleFactory(coupon=coupon, rule_type=rule_type, rule_value=value)
        for rule_type, value in [
            (ValidationRuleType.FIRST_TIME_USER, {}),
            (ValidationRuleType.EMAIL_DOMAIN, {"domains": ["partner.example"]}),
            (ValidationRuleType.MIN_ACCOUNT_AGE_DAYS, {"days": 30}),
            (ValidationRuleType.MAX_REDEMPTIONS_PER_IP, {"max": 1}),
        ]
    }
    CouponRedemption.objects.filter(coupon=coupon).update(ip_address="127.0.0.1")
    subscription = _paid_subscription(customer)
    PaymentTransaction.objects.create(
        user=customer, subscription=subscription, amount_usd=Decimal("19.00"), status=PaymentStatus.SUCCEEDED
    )
    redeeming_fast = [CouponRedemptionFactory(user=customer).pk for _ in range(5)]  # other coupons, this hour
    subscription.renewal_discount_usd = Decimal("1.00")
    subscription.save()

    def update(model_object, **fields):
        type(model_object).objects.filter(pk=model_object.pk).update(**fields)

    def expired_and_valid_from_past():
        update(coupon, valid_from=now - timedelta(days=2), valid_until=now - timedelta(days=1))

    steps = [
        ("coupon_not_found", lambda: None, {"code": "NO-SUCH-CODE"}),
        ("coupon_deleted", lambda: update(coupon, deleted_at=None), {}),
        ("coupon_inactive", lambda: update(coupon, is_active=True), {}),
        ("coupon_not_yet_valid", expired_and_valid_from_past, {}),
        ("coupon_expired", lambda: update(coupon, valid_until=None), {}),
        (
            "campaign_inactive",
            lambda: update(
                campaign, is_active=True, starts_at=now + timedelta(days=1), ends_at=now + timedelta(days=2)
            ),
            {},
        ),
        (
            "campaign_not_running",
            lambda: update(campaign, starts_at=now - timedelta(days=1), spent_usd=Decimal("9.00")),
            {},
        ),
        ("campaign_budget_exhausted", lambda: update(campaign, spent_usd=Decimal("0.00")), {}),
        ("coupon_max_uses_reached", lambda: update(coupon, max_uses=None), {}),
        ("coupon_user_limit_reached", lambda: update(coupon, max_uses_per_user=5), {}),
        ("tier_not_eligible", lambda: update(coupon, applicable_tiers=["pro"]), {}),
        ("billing_cycle_not_eligible", lambda: update(coupon, applicable_billing_cycles=["monthly"]), {}),
        ("minimum_purchase_not_met", lambda: update(coupon, min_purchase_usd=Decimal("10.00")), {}),
        ("new_customers_only", lambda: update(coupon, new_customers_only=False), {}),
        ("rule_first_time_user", lambda: update(rules[ValidationRuleType.FIRST_TIME_USER], is_active=False), {}),
        ("email_not_verified", lambda: email_verify(token=email_verification_token(user=customer)), {}),
        ("rule_email_domain", lambda: update(rules[ValidationRuleType.EMAIL_DOMAIN], is_active=False), {}),
        ("rule_min_account_age", lambda: update(rules[ValidationRuleType.MIN_ACCOUNT_AGE_DAYS], is_active=False), {}),
        (
            "rule_max_redemptions_per_ip",
            lambda: update(rules[ValidationRuleType.MAX_REDEMPTIONS_PER_IP], is_active=False),
            {},
        ),
        ("fraud_blocked", lambda: CouponRedemption.objects.filter(pk__in=redeeming_fast).delete(), {}),
        ("discount_already_pending", lambda: update(subscription, renewal_discount_usd=Decimal("0.00")), {}),
    ]
    seen = []
    for _expected, fix, body in steps:
        answer = _validate(customer_client, **body)
        seen.append(answer["reason_code"])
        assert answer["valid"] is False
        fix()
    assert seen == [expected for expected, _, _ in steps]
    assert _validate(customer_client) == {
        "valid": True,
        "reason_code": None,
        "discount_preview": {
            "original_amount_usd": "19.00",
            "discount_usd": "3.80",
            "final_amount_usd": "15.20",
            "credits": 0,
            "months_free": 0,
            "license": False,
        },
    }


def test_validate_writes_nothing_even_when_refusing(customer, customer_client):
    CouponFactory(
        code="CREDITS5K",
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.CREDITS,
        discount_value=5000,
    )
    tables = (
        CouponRedemption,
        CouponFraudDetection,
        CouponUsageLimit,
        CouponAnalyticsSnapshot,
        AdminAuditLog,
        CouponCampaign,
    )
    before = {model: model.objects.count() for model in tables}
    balance = UserCreditBalance.objects.get(user=customer).amount

    assert _validate(customer_client, code="credits5k")["valid"] is True
    assert _validate(customer_client, code="NOT-A-CODE")["reason_code"] == "coupon_not_found"

    assert {model: model.objects.count() for model in tables} == before
    assert UserCreditBalance.objects.get(user=customer).amount == balance


def test_codes_are_matched_whatever_their_case_and_spaces(customer, customer_client):
    CouponFactory(
        code="Summer-Sale",
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.CREDITS,
        discount_value=100,
    )

    assert _validate(customer_client, code="  summer-SALE ")["valid"] is True


@pytest.mark.parametrize(
    ("coupon_fields", "body", "preview"),
    [
        (
            {"discount_type": DiscountType.PERCENTAGE, "discount_value": Decimal("33.33")},
            {"amount_usd": "10.00"},
            {"original_amount_usd": "10.00", "discount_usd": "3.33", "final_amount_usd": "6.67"},
        ),
        (
            {
                "coupon_type": CouponType.FIXED_AMOUNT_DISCOUNT,
                "discount_type": DiscountType.FIXED_AMOUNT,
                "discount_value": Decimal("50.00"),
            },
            {"amount_usd": "19.00"},
            {"original_amount_usd": "19.00", "discount_usd": "19.00", "final_amount_usd": "0.00"},
        ),
        (
            {
                "coupon_type": CouponType.DURATION_BONUS,
                "discount_type": DiscountType.MONTHS_FREE,
                "discount_value": Decimal("2"),
            },
            {},
            {"months_free": 2},
        ),
        (
            {"coupon_type": CouponType.BYOK_MIGRATION, "discount_type": ""},
            {},
            {"license": True, "original_amount_usd": "199.00", "discount_usd": "199.00", "final_amount_usd": "0.00"},
        ),
    ],
)
def test_the_preview_shows_what_redeeming_would_give(customer, customer_client, coupon_fields, body, preview):
    _paid_subscription(customer)
    CouponFactory(code="PREVIEW", **coupon_fields)

    answer = _validate(customer_client, code="PREVIEW", **body)

    assert {key: answer["discount_preview"][key] for key in preview} == preview


def test_the_preview_takes_the_price_of_the_tier_and_cycle_asked_about(customer, customer_client):
    CouponFactory(code="TENOFF", discount_value=Decimal("10"))

    answer = _validate(customer_client, code="TENOFF", tier="pro_max", billing_cycle="annual")

    assert answer["discount_preview"]["original_amount_usd"] == "390.00"
    assert answer["discount_preview"]["discount_usd"] == "39.00"


def test_a_refused_redeem_answers_the_same_reason_as_validate_and_records_it(customer, customer_client):
    CouponFactory(code="LATER", valid_from=timezone.now() + timedelta(days=3))

    validated = _validate(customer_client, code="later")
    redeemed = customer_client.post(REDEEM_URL, {"code": "later"}, format="json")

    assert validated["reason_code"] == "coupon_not_yet_valid"
    assert redeemed.status_code == 422
    assert redeemed["Content-Type"] == "application/problem+json"
    assert redeemed.json()["code"] == "coupon_not_yet_valid"
    failed = CouponRedemption.objects.get(user=customer)
    assert (failed.status, failed.failure_reason, failed.coupon.code) == ("failed", "coupon_not_yet_valid", "LATER")


def test_validate_needs_a_signed_in_user(api_client):
    response = api_client.post(VALIDATE_URL, {"code": "ANY"}, format="json")

    assert response.status_code == 401


def test_bad_input_is_a_validation_problem(customer_client):
    response = customer_client.post(VALIDATE_URL, {"code": "", "tier": "gold", "amount_usd": "-1"}, format="json")

    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"code", "tier", "amount_usd"}
