"""E-mail verification by a signed link, and what waits for it: coupons for an e-mail domain always,
a sign-up's free credits and trials when FREE_OFFERS_REQUIRE_VERIFIED_EMAIL says so."""

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from billing_project.email_verification import email_verification_token
from billing_project.models import VerifiedEmail
from conftest import access_token_for, bearer
from coupons.models import CouponType, DiscountType, ValidationRuleType
from coupons.tests.factories import CouponFactory, CouponValidationRuleFactory
from credits.models import UserCreditBalance
from subscriptions.models import Subscription
from subscriptions.services import tier_catalog_seed

pytestmark = pytest.mark.django_db

PASSWORD = "a long enough passphrase"
VERIFY_URL = "/api/v1/auth/verify-email/"


@pytest.fixture(autouse=True)
def catalog():
    tier_catalog_seed()


@pytest.fixture
def offers_wait(settings):
    settings.FREE_OFFERS_REQUIRE_VERIFIED_EMAIL = True


def sign_up(email: str, django_capture_on_commit_callbacks) -> tuple:
    """Registers through the API (sending the e-mail on commit); returns the user and a client signed in as them."""
    with django_capture_on_commit_callbacks(execute=True):
        response = APIClient().post("/api/v1/auth/register/", {"email": email, "password": PASSWORD}, format="json")
    assert response.status_code == 201, response.content
    user = get_user_model().objects.get(pk=response.json()["id"])
    client = APIClient()
    client.credentials(**bearer(access_token_for(user)))
    return user, client


def link_in(message) -> str:
    return re.search(r"https?://\S+", message.body).group(0)


def test_signing_up_sends_a_link_that_verifies_the_address(mailoutbox, django_capture_on_commit_callbacks):
    user, client = sign_up("Ada@Example.com", django_capture_on_commit_callbacks)
    assert client.get("/api/v1/me/").json()["email_verified"] is False
    (message,) = mailoutbox
    assert message.to == ["ada@example.com"]
    link = urlsplit(link_in(message))

    response = APIClient().get(f"{link.path}?{link.query}")

    assert response.status_code == 200, response.content
    assert response.json() == {"email": "ada@example.com", "verified": True}
    assert client.get("/api/v1/me/").json()["email_verified"] is True
    assert VerifiedEmail.objects.get(user=user).email == "ada@example.com"


def test_the_links_token_may_be_posted_by_a_web_page(settings, mailoutbox, django_capture_on_commit_callbacks):
    settings.EMAIL_VERIFICATION_URL = "https://app.example.com/verify?token={token}&from=email"
    user, _ = sign_up("ada@example.com", django_capture_on_commit_callbacks)
    link = link_in(mailoutbox[0])
    assert link.startswith("https://app.example.com/verify?token=") and link.endswith("&from=email")
    token = link.removeprefix("https://app.example.com/verify?token=").removesuffix("&from=email")

    response = APIClient().post(VERIFY_URL, {"token": token}, format="json")

    assert response.status_code == 200, response.content
    assert VerifiedEmail.objects.filter(user=user).exists()


def test_verifying_twice_is_harmless(user):
    token = email_verification_token(user=user)

    answers = [APIClient().post(VERIFY_URL, {"token": token}, format="json").status_code for _ in range(2)]

    assert answers == [200, 200]
    assert VerifiedEmail.objects.filter(user=user).count() == 1


@pytest.mark.parametrize(
    ("token", "code"),
    [("not-a-token", "verification_token_invalid"), (None, "verification_token_invalid")],
)
def test_a_tampered_token_is_a_400_problem(user, token, code):
    token = token or email_verification_token(user=user)[:-2] + "xx"

    response = APIClient().post(VERIFY_URL, {"token": token}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert not VerifiedEmail.objects.exists()


def test_an_expired_link_is_a_400_problem(user, settings):
    token = email_verification_token(user=user)

    with time_machine.travel(settings.EMAIL_VERIFICATION_MAX_AGE + timedelta(minutes=1)):
        response = APIClient().get(VERIFY_URL, {"token": token})

    assert response.status_code == 400
    assert response.json()["code"] == "verification_token_expired"
    assert not VerifiedEmail.objects.exists()


def test_a_link_for_an_address_the_user_changed_verifies_nothing(user, user_client):
    token = email_verification_token(user=user)
    user.email = "someone.else@example.com"
    user.save(update_fields=["email"])

    response = APIClient().post(VERIFY_URL, {"token": token}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "verification_token_invalid"
    assert user_client.get("/api/v1/me/").json()["email_verified"] is False


def test_a_verified_address_that_changes_needs_a_new_proof(user, user_client):
    APIClient().post(VERIFY_URL, {"token": email_verification_token(user=user)}, format="json")
    assert user_client.get("/api/v1/me/").json()["email_verified"] is True

    user.email = "new.address@example.com"
    user.save(update_fields=["email"])

    assert user_client.get("/api/v1/me/").json()["email_verified"] is False


def test_resend_mails_a_new_link_until_the_address_is_verified(
    user, user_client, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        resent = user_client.post("/api/v1/auth/verify-email/resend/")
    APIClient().get(VERIFY_URL, {"token": email_verification_token(user=user)})
    with django_capture_on_commit_callbacks(execute=True):
        after = user_client.post("/api/v1/auth/verify-email/resend/")

    assert (resent.status_code, resent.json()["verified"]) == (202, False)
    assert (after.status_code, after.json()["verified"]) == (200, True)
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == [user.email]


# What waits for a verified address


def test_a_coupon_for_an_email_domain_waits_for_a_verified_address(django_capture_on_commit_callbacks):
    # given: a partner's coupon, and someone who signed up with that domain without owning it
    coupon = CouponFactory(
        code="PARTNER50K",
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.CREDITS,
        discount_value=50_000,
    )
    CouponValidationRuleFactory(
        coupon=coupon, rule_type=ValidationRuleType.EMAIL_DOMAIN, rule_value={"domains": ["acme-partner.com"]}
    )
    mallory, client = sign_up("mallory@acme-partner.com", django_capture_on_commit_callbacks)
    balance = UserCreditBalance.objects.get(user=mallory).amount

    # when
    refused = client.post("/api/v1/coupons/redeem/", {"code": "PARTNER50K"}, format="json")

    # then
    assert refused.status_code == 422
    assert refused.json()["code"] == "email_not_verified"
    assert UserCreditBalance.objects.get(user=mallory).amount == balance

    # and once the address is proven, the same coupon redeems
    APIClient().post(VERIFY_URL, {"token": email_verification_token(user=mallory)}, format="json")
    redeemed = client.post("/api/v1/coupons/redeem/", {"code": "PARTNER50K"}, format="json")
    assert redeemed.status_code == 201, redeemed.content
    assert UserCreditBalance.objects.get(user=mallory).amount == balance + 50_000


def test_by_default_in_development_a_sign_up_gets_its_free_credits_at_once(django_capture_on_commit_callbacks):
    user, client = sign_up("ada@example.com", django_capture_on_commit_callbacks)

    assert Subscription.objects.get(user=user).tier == "free"
    assert UserCreditBalance.objects.get(user=user).amount == 2000


@pytest.mark.usefixtures("offers_wait")
def test_a_sign_ups_free_credits_wait_for_its_verified_address(django_capture_on_commit_callbacks):
    # given: a sign-up that has not verified its address
    user, client = sign_up("ada@example.com", django_capture_on_commit_callbacks)

    # then: it is on the free tier, without credits yet
    assert client.get("/api/v1/me/").json()["tier"] == "free"
    assert client.get("/api/v1/me/entitlements/").json()["tier"] == "free"
    assert not Subscription.objects.filter(user=user).exists()
    assert client.get("/api/v1/me/credits/").json()["balance"] == 0

    # when: the address is verified (twice)
    for _ in range(2):
        APIClient().post(VERIFY_URL, {"token": email_verification_token(user=user)}, format="json")

    # then: the free subscription starts with its credits, once
    assert Subscription.objects.get(user=user).tier == "free"
    assert UserCreditBalance.objects.get(user=user).amount == 2000


@pytest.mark.usefixtures("offers_wait")
def test_a_trial_waits_for_a_verified_address(django_capture_on_commit_callbacks):
    user, client = sign_up("ada@example.com", django_capture_on_commit_callbacks)

    refused = client.post("/api/v1/subscriptions/", {"tier": "pro", "billing_cycle": "monthly"}, format="json")

    assert refused.status_code == 422
    assert refused.json()["code"] == "email_not_verified"
    assert not Subscription.objects.filter(user=user).exists()

    APIClient().post(VERIFY_URL, {"token": email_verification_token(user=user)}, format="json")
    started = client.post("/api/v1/subscriptions/", {"tier": "pro", "billing_cycle": "monthly"}, format="json")
    assert started.status_code == 201, started.content
    assert started.json()["subscription"]["status"] == "trial"


@pytest.mark.usefixtures("offers_wait")
def test_an_unverified_sign_up_may_still_pay(django_capture_on_commit_callbacks):
    user, client = sign_up("ada@example.com", django_capture_on_commit_callbacks)

    started = client.post(
        "/api/v1/subscriptions/", {"tier": "enterprise_pro", "billing_cycle": "monthly"}, format="json"
    )

    assert started.status_code == 201, started.content
    assert Subscription.objects.get(user=user).status == "active"
