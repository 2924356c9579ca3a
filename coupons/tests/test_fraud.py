"""Fraud rules around redemption: velocity per user, device and IP; several accounts on one device or
IP; code guessing. High severity refuses the redemption (422 `fraud_blocked`), lower severity lets
it through flagged for review; every detection is stored with its type and severity. Also the
throttles and the redemption counter."""

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from conftest import access_token_for, bearer
from coupons.api.throttles import CouponIpRateThrottle, CouponUserRateThrottle
from coupons.models import (
    CouponCodeGuess,
    CouponFraudDetection,
    CouponRedemption,
    CouponType,
    DiscountType,
    RedemptionStatus,
)
from coupons.tests.conftest import REDEEM_URL, VALIDATE_URL
from coupons.tests.factories import CouponFactory, CouponRedemptionFactory
from credits.models import UserCreditBalance

pytestmark = pytest.mark.django_db

DEVICE = "device-fingerprint-1"
CLIENT_IP = "127.0.0.1"  # what the test client sends as REMOTE_ADDR


@pytest.fixture
def credits_coupon():
    return CouponFactory(
        code="BONUS1K",
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.CREDITS,
        discount_value=1000,
        max_uses_per_user=1,
    )


def _earlier_redemptions(count: int, *, minutes_ago: int = 10, **fields):
    """Successful redemptions of other coupons, `minutes_ago`."""
    for _ in range(count):
        CouponRedemptionFactory(redemption_date=timezone.now() - timedelta(minutes=minutes_ago), **fields)


def _redeem(client, code="BONUS1K", device=DEVICE):
    return client.post(REDEEM_URL, {"code": code, "device_fingerprint": device}, format="json")


def _detections(user):
    return list(CouponFraudDetection.objects.filter(user=user).values_list("detection_type", "severity"))


def test_a_user_redeeming_too_fast_is_blocked_and_the_detection_stored(customer, customer_client, credits_coupon):
    _earlier_redemptions(5, user=customer)
    balance = UserCreditBalance.objects.get(user=customer).amount

    response = _redeem(customer_client)

    assert response.status_code == 422
    assert response.json()["code"] == "fraud_blocked"
    assert UserCreditBalance.objects.get(user=customer).amount == balance
    failed = CouponRedemption.objects.get(coupon=credits_coupon)
    assert (failed.status, failed.failure_reason) == (RedemptionStatus.FAILED, "fraud_blocked")
    detection = CouponFraudDetection.objects.get(user=customer)
    assert (detection.detection_type, detection.severity) == ("velocity_user", "high")
    assert detection.redemption == failed
    assert detection.is_flagged and detection.details == {"redemptions_last_hour": 5}
    assert detection.device_fingerprint == DEVICE


def test_a_user_redeeming_quickly_is_flagged_for_review_but_served(customer, customer_client, credits_coupon):
    _earlier_redemptions(3, user=customer)

    response = _redeem(customer_client)

    assert response.status_code == 201
    redemption = CouponRedemption.objects.get(coupon=credits_coupon)
    assert redemption.status == RedemptionStatus.SUCCESS
    detection = CouponFraudDetection.objects.get(user=customer)
    assert (detection.detection_type, detection.severity, detection.redemption) == (
        "velocity_user",
        "medium",
        redemption,
    )
    assert detection.is_flagged and detection.resolved_at is None


def test_redemptions_older_than_the_hour_do_not_count_towards_velocity(customer, customer_client, credits_coupon):
    _earlier_redemptions(6, user=customer, minutes_ago=61)

    assert _redeem(customer_client).status_code == 201
    assert _detections(customer) == []


def test_one_device_redeeming_too_fast_is_blocked(customer, customer_client, credits_coupon):
    _earlier_redemptions(5, device_fingerprint=DEVICE)

    response = _redeem(customer_client)

    assert response.json()["code"] == "fraud_blocked"
    assert ("velocity_device", "high") in _detections(customer)


def test_one_ip_redeeming_too_fast_is_blocked(customer, customer_client, credits_coupon):
    _earlier_redemptions(20, ip_address=CLIENT_IP)

    response = _redeem(customer_client, device="")

    assert response.json()["code"] == "fraud_blocked"
    assert ("velocity_ip", "high") in _detections(customer)


def test_a_second_account_on_a_device_is_flagged_and_a_third_blocked(customer, customer_client, credits_coupon):
    CouponRedemptionFactory(coupon=credits_coupon, device_fingerprint=DEVICE, use_number=1)

    assert _redeem(customer_client).status_code == 201
    assert _detections(customer) == [("multiple_accounts_device", "medium")]

    CouponRedemption.objects.filter(user=customer).delete()
    CouponFraudDetection.objects.all().delete()
    CouponRedemptionFactory(coupon=credits_coupon, device_fingerprint=DEVICE, use_number=2)
    response = _redeem(customer_client)

    assert response.json()["code"] == "fraud_blocked"
    detection = CouponFraudDetection.objects.get(user=customer)
    assert (detection.detection_type, detection.severity) == ("multiple_accounts_device", "high")
    assert detection.details == {"other_accounts": 2}


def test_accounts_on_one_device_count_per_coupon(customer, customer_client, credits_coupon):
    _earlier_redemptions(2, device_fingerprint=DEVICE, minutes_ago=120)

    assert _redeem(customer_client).status_code == 201
    assert _detections(customer) == []


def test_many_accounts_on_one_ip_are_flagged_only(customer, customer_client, credits_coupon):
    _earlier_redemptions(5, ip_address=CLIENT_IP, minutes_ago=120)

    response = _redeem(customer_client, device="")

    assert response.status_code == 201
    assert _detections(customer) == [("multiple_accounts_ip", "medium")]


def test_guessing_codes_flags_then_blocks_the_guesser(customer, customer_client, credits_coupon):
    for guess in range(3):
        assert _redeem(customer_client, code=f"GUESS{guess}").json()["code"] == "coupon_not_found"
    assert _redeem(customer_client).status_code == 201
    assert _detections(customer) == [("code_guessing", "medium")]

    other_coupon = CouponFactory(
        code="BONUS2K",
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.CREDITS,
        discount_value=2000,
    )
    for guess in range(3, 5):
        _redeem(customer_client, code=f"GUESS{guess}")
    response = _redeem(customer_client, code=other_coupon.code)

    assert response.json()["code"] == "fraud_blocked"
    assert ("code_guessing", "high") in _detections(customer)
    assert CouponRedemption.objects.filter(user=customer, failure_reason="coupon_not_found").count() == 5


def _validate_reason(client, code="BONUS1K") -> str | None:
    return client.post(VALIDATE_URL, {"code": code}, format="json").json()["reason_code"]


def _guesses(client, count: int, *, via=VALIDATE_URL, start: int = 0) -> None:
    for guess in range(start, start + count):
        client.post(via, {"code": f"GUESS{guess}"}, format="json")


def test_unknown_codes_tried_through_validate_are_recorded_and_logged(customer, customer_client, caplog):
    with caplog.at_level("INFO", logger="coupons.services.redemption"):
        _guesses(customer_client, 2)
        _guesses(customer_client, 1, via=REDEEM_URL, start=2)

    guesses = CouponCodeGuess.objects.filter(user=customer).order_by("tried_at")
    assert [(guess.code, guess.channel, guess.ip_address) for guess in guesses] == [
        ("GUESS0", "validate", CLIENT_IP),
        ("GUESS1", "validate", CLIENT_IP),
        ("GUESS2", "redeem", CLIENT_IP),
    ]
    assert sum("unknown coupon code tried" in record.getMessage() for record in caplog.records) == 3
    assert _detections(customer) == [("code_guessing", "medium")]


def test_guessing_through_validate_blocks_the_guesser_at_validate_and_redeem(customer, customer_client, credits_coupon):
    _guesses(customer_client, 5)

    assert _validate_reason(customer_client) == "fraud_blocked"
    assert _redeem(customer_client).json()["code"] == "fraud_blocked"
    assert ("code_guessing", "high") in _detections(customer)
    assert not CouponRedemption.objects.filter(user=customer, status=RedemptionStatus.SUCCESS).exists()


def test_a_blocked_guesser_gets_one_answer_whatever_the_code(customer, customer_client, credits_coupon):
    _guesses(customer_client, 5)

    answers = {code: _validate_reason(customer_client, code) for code in ("BONUS1K", "NO-SUCH-CODE")}

    assert answers == {"BONUS1K": "fraud_blocked", "NO-SUCH-CODE": "fraud_blocked"}


def test_guessing_from_an_address_does_not_block_its_other_users(customer_client, user_client, user, credits_coupon):
    # given a guesser blocked on the address both accounts share
    _guesses(customer_client, 6)
    assert _validate_reason(customer_client) == "fraud_blocked"

    # when another account there, which guessed nothing, uses a real code
    response = _redeem(user_client)

    # then it is served
    assert response.status_code == 201, response.content
    assert not CouponFraudDetection.objects.filter(user=user).exists()


def test_accounts_guessing_together_from_one_address_are_all_blocked(
    customer_client, user_client, other_user, credits_coupon
):
    accomplice = APIClient()
    accomplice.credentials(**bearer(access_token_for(other_user)))
    _guesses(customer_client, 3)
    _guesses(accomplice, 2, start=3)

    assert _validate_reason(customer_client) == "fraud_blocked"
    assert _validate_reason(accomplice) == "fraud_blocked"
    assert _validate_reason(user_client) is None


def test_validate_reports_a_block_without_recording_anything(customer, customer_client, credits_coupon):
    _earlier_redemptions(5, user=customer)
    detections = CouponFraudDetection.objects.count()

    answer = customer_client.post(VALIDATE_URL, {"code": "BONUS1K"}, format="json").json()

    assert (answer["valid"], answer["reason_code"]) == (False, "fraud_blocked")
    assert CouponFraudDetection.objects.count() == detections
    assert not CouponRedemption.objects.filter(coupon=credits_coupon).exists()


def _counted(result: str) -> float:
    return REGISTRY.get_sample_value("coupon_redemptions_total", {"result": result}) or 0.0


def test_redemptions_are_counted_by_result(
    customer, customer_client, credits_coupon, django_capture_on_commit_callbacks
):
    successes, refusals = _counted("success"), _counted("coupon_user_limit_reached")

    with django_capture_on_commit_callbacks(execute=True):
        _redeem(customer_client)
        _redeem(customer_client)

    assert _counted("success") == successes + 1
    assert _counted("coupon_user_limit_reached") == refusals + 1


def test_redeem_and_validate_are_throttled(customer_client, monkeypatch, credits_coupon):
    monkeypatch.setattr(CouponUserRateThrottle, "THROTTLE_RATES", {"coupon": "2/min"})
    monkeypatch.setattr(CouponIpRateThrottle, "THROTTLE_RATES", {"coupon": "100/min"})
    customer_client.post(VALIDATE_URL, {"code": "BONUS1K"}, format="json")
    customer_client.post(VALIDATE_URL, {"code": "BONUS1K"}, format="json")

    throttled = _redeem(customer_client)

    assert throttled.status_code == 429
    assert throttled.json()["code"] == "throttled"
    assert int(throttled["Retry-After"]) > 0
    assert not CouponRedemption.objects.exists()


def test_one_ip_is_throttled_across_accounts(customer_client, user_client, monkeypatch, credits_coupon):
    monkeypatch.setattr(CouponUserRateThrottle, "THROTTLE_RATES", {"coupon": "100/min"})
    monkeypatch.setattr(CouponIpRateThrottle, "THROTTLE_RATES", {"coupon": "2/min"})
    customer_client.post(VALIDATE_URL, {"code": "BONUS1K"}, format="json")
    user_client.post(VALIDATE_URL, {"code": "BONUS1K"}, format="json")

    assert user_client.post(VALIDATE_URL, {"code": "BONUS1K"}, format="json").status_code == 429
