"""Deleting a user (GDPR): personal data goes, financial history and the audit trail stay."""

import uuid
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AdminAuditLog
from audit.services import audit_record
from billing_project.models import IdempotencyKey
from conftest import access_token_for, bearer
from coupons.models import Coupon, CouponRedemption
from credits.models import (
    CreditAllocation,
    CreditConsumption,
    CreditDeductionLedger,
    Provider,
    TokenUsageLedger,
    UserCreditBalance,
    UserCreditSource,
)
from credits.services import pricing_catalog_seed
from licensing.models import LicenseActivation, PerpetualLicense
from payments.models import PaymentEvent
from payments.services.events import payment_event_record
from subscriptions.models import Subscription, UserEntitlement
from subscriptions.services import account_register, tier_catalog_seed

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer():
    """A customer with something in every app."""
    tier_catalog_seed()
    pricing_catalog_seed()
    user = account_register(email="customer@example.com", password="a long enough passphrase")
    now = timezone.now()
    license_ = PerpetualLicense.objects.create(
        user=user,
        license_key="REPHLO-AAAA-BBBB-CCCC-DDDD",
        purchase_price_usd=Decimal("199.00"),
        purchased_version="1.0.0",
        eligible_until_version="1.99.99",
    )
    LicenseActivation.objects.create(
        license=license_, device_fingerprint="device-1", activated_at=now, last_seen_at=now
    )
    grant = UserCreditSource.objects.get(user=user)
    deduction = CreditDeductionLedger.objects.create(
        user=user, amount=53, balance_before=2000, balance_after=1947, reason="inference", request_id=uuid.uuid4()
    )
    CreditConsumption.objects.create(deduction=deduction, source=grant, amount=53)
    TokenUsageLedger.objects.create(
        request_id=deduction.request_id,
        user=user,
        provider=Provider.objects.get(name="openai"),
        model_name="gpt-4o",
        input_tokens=1000,
        output_tokens=2000,
        total_tokens=3000,
        vendor_cost=Decimal("0.035"),
        margin_multiplier=Decimal("1.5"),
        credit_value_usd=Decimal("0.0525"),
        credits_deducted=53,
        gross_margin_usd=Decimal("0.0175"),
        request_type="chat",
        request_started_at=now,
        request_completed_at=now,
        deduction=deduction,
    )
    coupon = Coupon.objects.create(
        code="WELCOME", coupon_type="percentage_discount", discount_type="percentage", discount_value=10, valid_from=now
    )
    CouponRedemption.objects.create(
        coupon=coupon,
        coupon_code="WELCOME",
        user=user,
        redemption_date=now,
        status="success",
        use_number=1,
        user_use_number=1,
    )
    payment_event_record(event_type="checkout_completed", user=user, amount=1900, currency="usd")
    audit_record(action="update", resource_type="probe", actor=user)
    return user


def test_deleting_a_user_removes_personal_data_and_keeps_history(staff_client, customer):
    user_id = customer.pk

    response = staff_client.delete(f"/api/v1/admin/users/{user_id}/")

    assert response.status_code == 204
    for model in (
        Subscription,
        UserEntitlement,
        CreditAllocation,
        UserCreditBalance,
        UserCreditSource,
        CreditDeductionLedger,
        TokenUsageLedger,
        PerpetualLicense,
    ):
        assert not model.objects.filter(user_id=user_id).exists(), model.__name__
    assert not LicenseActivation.objects.exists()
    assert not CreditConsumption.objects.exists()
    redemption = CouponRedemption.objects.get()
    assert redemption.user_id is None and redemption.coupon_code == "WELCOME"
    event = PaymentEvent.objects.get()
    assert event.user_id is None and event.amount == 1900
    acted = AdminAuditLog.objects.get(resource_type="probe")
    assert acted.actor_id is None and acted.actor_email == "customer@example.com"
    assert AdminAuditLog.objects.filter(action="delete", resource_id=str(user_id)).exists()


def test_export_returns_every_part_of_a_users_data_and_is_audited(staff_client, customer):
    response = staff_client.get(f"/api/v1/admin/users/{customer.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["user"]["email"] == "customer@example.com"
    assert body["credits"]["balance"] == 2000
    assert len(body["licenses"]["licenses"]) == 1
    assert len(body["coupon_redemptions"]) == 1
    assert len(body["payment_events"]) == 1
    assert body["subscriptions"]["subscriptions"][0]["tier"] == "free"
    assert AdminAuditLog.objects.filter(action="export", resource_id=str(customer.pk)).exists()


def test_a_superuser_cannot_be_erased_through_the_api(staff_client, django_user_model):
    root = django_user_model.objects.create_superuser(username="root@example.com", email="root@example.com")

    response = staff_client.delete(f"/api/v1/admin/users/{root.pk}/")

    assert response.status_code == 409
    assert response.json()["code"] == "cannot_erase_superuser"
    assert django_user_model.objects.filter(pk=root.pk).exists()


def test_erasing_a_user_removes_their_stored_idempotent_responses(staff_client, customer):
    # given: a purchase answered with the new license key, stored for its Idempotency-Key
    client = APIClient()
    client.credentials(**bearer(access_token_for(customer)))
    purchase = client.post("/api/v1/licenses/purchase/", {}, format="json", HTTP_IDEMPOTENCY_KEY="buy-1")
    assert purchase.status_code == 201, purchase.content
    assert "REPHLO-" in purchase.content.decode()

    # when: the user is erased while their access token has minutes left
    assert staff_client.delete(f"/api/v1/admin/users/{customer.pk}/").status_code == 204

    # then: nothing is kept, and the token replays nothing
    assert not IdempotencyKey.objects.filter(caller=f"user:{customer.pk}").exists()
    replay = client.post("/api/v1/licenses/purchase/", {}, format="json", HTTP_IDEMPOTENCY_KEY="buy-1")
    assert replay.status_code == 401
    assert "REPHLO-" not in replay.content.decode()


def test_deleting_a_user_any_other_way_removes_their_idempotency_records_too(user, other_user):
    for owner in (user, other_user):
        IdempotencyKey.objects.create(
            caller=f"user:{owner.pk}", path="/api/v1/x/", key="k", request_hash="0" * 64, status_code=201
        )

    user.delete()

    assert list(IdempotencyKey.objects.values_list("caller", flat=True)) == [f"user:{other_user.pk}"]
