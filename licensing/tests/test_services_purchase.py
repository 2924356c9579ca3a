from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from audit.models import AdminAuditLog, AuditAction
from billing_project.errors import Conflict, RuleViolation, ServiceUnavailable
from conftest import STRIPE_TEST_KEY
from licensing import keys, services
from licensing.codes import ErrorCode
from licensing.models import LicenseStatus, PerpetualLicense, UpgradeStatus, VersionUpgrade
from licensing.tests.factories import PerpetualLicenseFactory
from payments.models import OperationState, PaymentEvent, PaymentOperation
from payments.tests.helpers import checkout_paid, deliver_event

pytestmark = pytest.mark.django_db


def test_offline_purchase_creates_an_active_license_at_the_catalog_price(user):
    purchase = services.license_purchase(user=user)

    license_ = PerpetualLicense.objects.get()
    assert purchase.license == license_
    assert purchase.checkout.completed is True
    assert purchase.checkout.url is None
    assert license_.status == LicenseStatus.ACTIVE
    assert license_.activated_at is not None
    assert keys.key_is_valid(license_.license_key)
    assert (license_.purchase_price_usd, license_.purchased_version, license_.eligible_until_version) == (
        Decimal("199.00"),
        "1.0.0",
        "1.999.999",
    )
    assert (license_.max_activations, license_.byok_enabled) == (3, True)
    assert license_.checkout_session_id == purchase.checkout.session_id


def test_offline_purchase_records_the_payment_and_its_audit_row_with_the_key_masked(user):
    purchase = services.license_purchase(user=user)

    event = PaymentEvent.objects.get()
    assert (event.user, event.event_type, event.amount, event.currency) == (user, "checkout_completed", 19900, "usd")
    assert event.metadata["kind"] == "license"
    assert event.metadata["license_id"] == str(purchase.license.pk)
    row = AdminAuditLog.objects.get(action=AuditAction.PROCESS)
    assert (row.resource_type, row.resource_id) == ("payments.paymentoperation", purchase.checkout.operation_id)
    assert row.new_value["state"] == OperationState.SUCCEEDED
    assert purchase.license.license_key not in str(row.new_value)


def test_purchase_follows_the_price_and_version_settings(user, settings):
    settings.LICENSE_PRICE_USD = Decimal("149.995")
    settings.LICENSE_CURRENT_VERSION = "2.3.1"

    license_ = services.license_purchase(user=user, version="2.1.0").license

    assert license_.purchase_price_usd == Decimal("150.00")
    assert (license_.purchased_version, license_.eligible_until_version) == ("2.1.0", "2.999.999")


@pytest.mark.parametrize("version", ["1.0.1", "2.0.0", "0.9.0"])
def test_only_released_versions_of_the_current_line_are_on_sale(user, version):
    with pytest.raises(RuleViolation) as refused:
        services.license_purchase(user=user, version=version)

    assert refused.value.code == ErrorCode.VERSION_NOT_ON_SALE
    assert not PerpetualLicense.objects.exists()
    assert not PaymentEvent.objects.exists()


def test_stripe_purchase_creates_a_pending_license_and_a_checkout_session(user, stripe_http, settings):
    settings.LICENSE_CHECKOUT_SUCCESS_URL = "https://app.example.com/licenses/thanks"

    purchase = services.license_purchase(user=user)

    # the user's Stripe customer is created once, then the session is asked for exactly as the
    # webhook will read it back
    assert stripe_http.calls() == [("POST", "customers"), ("POST", "checkout/sessions")]
    customer, request = stripe_http.requests
    assert customer["form"] == {"email": user.email, "metadata[user_id]": str(user.pk)}
    assert request["headers"]["Authorization"] == f"Bearer {STRIPE_TEST_KEY}"
    assert request["headers"]["Idempotency-Key"] == f"op_{purchase.checkout.operation_id}:session"
    form = request["form"]
    assert form["mode"] == "payment"
    assert form["customer"] == stripe_http.objects_of("customer")[0]["id"]
    assert form["client_reference_id"] == str(user.pk)
    assert form["metadata[kind]"] == "license"
    assert form["metadata[operation_id]"] == purchase.checkout.operation_id
    assert form["metadata[license_id]"] == str(purchase.license.pk)
    assert form["line_items[0][price_data][unit_amount]"] == "19900"
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert form["success_url"] == "https://app.example.com/licenses/thanks"
    assert "cancel_url" not in form
    # and the license waits for the payment
    assert purchase.checkout.completed is False
    assert purchase.checkout.url == f"https://checkout.stripe.com/c/pay/{purchase.checkout.session_id}"
    license_ = PerpetualLicense.objects.get()
    assert (license_.status, license_.activated_at) == (LicenseStatus.PENDING, None)
    assert not PaymentEvent.objects.exists()


def session_paid(stripe_http, session_id: str) -> dict:
    """The customer pays the session on Stripe's page; returns the session as its event carries it."""
    return stripe_http.checkout_complete(session_id)


def test_webhook_completion_activates_the_pending_license_once(user, stripe_http):
    purchase = services.license_purchase(user=user)
    session = session_paid(stripe_http, purchase.checkout.session_id)
    event_id = "evt_license_paid"

    first, replayed = deliver_event("checkout.session.completed", session, event_id=event_id)
    license_ = PerpetualLicense.objects.get()
    activated_at = license_.activated_at
    again, replayed_again = deliver_event("checkout.session.completed", session, event_id="evt_license_paid_twin")

    assert (first.status, replayed, again.status, replayed_again) == ("processed", False, "processed", False)
    license_.refresh_from_db()
    assert (license_.status, license_.activated_at) == (LicenseStatus.ACTIVE, activated_at)
    assert license_.checkout_session_id == purchase.checkout.session_id
    assert PaymentEvent.objects.filter(event_type="checkout_completed").count() == 1
    assert stripe_http.charges == [{"session": purchase.checkout.session_id, "amount": 19900}]


def test_a_checkout_naming_someone_elses_license_is_acknowledged_and_refunded(user, other_user, stripe_http):
    purchase = services.license_purchase(user=user)

    forged = checkout_paid(
        user=other_user,
        metadata={"kind": "license", "license_id": str(purchase.license.pk)},
        amount_cents=19900,
        payment_intent="pi_forged",
    )

    assert forged.status == "processed"
    operation = PaymentOperation.objects.get(stripe_checkout_session_id=forged.payload["data"]["object"]["id"])
    assert (operation.state, operation.cleanup_due) == (OperationState.NEEDS_ATTENTION, "refund")
    assert PerpetualLicense.objects.get().status == LicenseStatus.PENDING


def test_a_stripe_outage_keeps_the_pending_license_for_the_retry_which_gets_the_same_checkout(user, stripe_http):
    stripe_http.inject("POST", "checkout/sessions", "unavailable")

    with pytest.raises(ServiceUnavailable) as refused:
        services.license_purchase(user=user)

    assert refused.value.code == "payment_provider_unavailable"
    assert refused.value.extra["retry_after"] == 30
    license_ = PerpetualLicense.objects.get()
    operation = PaymentOperation.objects.get()
    assert (license_.status, operation.state) == (LicenseStatus.PENDING, OperationState.PENDING)
    assert "did not answer" in operation.last_error

    retried = services.license_purchase(user=user)
    again = services.license_purchase(user=user)

    assert retried.license == again.license == license_
    assert retried.checkout.session_id == again.checkout.session_id
    assert len(stripe_http.objects_of("checkout.session")) == 1
    assert len(stripe_http.objects_of("customer")) == 1


def test_staff_issue_creates_an_active_license_and_an_audit_row(user, staff_user):
    license_ = services.license_issue(
        user=user, actor=staff_user, purchased_version="1.4.2", max_activations=5, byok_enabled=False
    )

    assert (license_.status, license_.purchase_price_usd, license_.eligible_until_version) == (
        LicenseStatus.ACTIVE,
        Decimal("0.00"),
        "1.999.999",
    )
    assert (license_.max_activations, license_.byok_enabled) == (5, False)
    row = AdminAuditLog.objects.get(action=AuditAction.CREATE)
    assert (row.actor, row.resource_type, row.resource_id) == (
        staff_user,
        "licensing.perpetuallicense",
        str(license_.pk),
    )
    assert row.new_value["license_key"] == f"REPHLO-****-****-****-{license_.license_key[-4:]}"


def test_upgrade_is_not_available_while_the_license_covers_the_release_on_sale(owned_license):
    with pytest.raises(Conflict) as refused:
        services.license_upgrade(user=owned_license.user, license_key=owned_license.license_key)

    assert refused.value.code == ErrorCode.UPGRADE_NOT_AVAILABLE
    assert not VersionUpgrade.objects.exists()


def test_early_upgrade_is_discounted_and_raises_the_coverage_at_once_offline(owned_license, settings):
    settings.LICENSE_CURRENT_VERSION = "2.0.0"

    purchase = services.license_upgrade(user=owned_license.user, license_key=owned_license.license_key)

    upgrade = VersionUpgrade.objects.get()
    assert purchase.upgrade == upgrade
    assert (upgrade.from_version, upgrade.to_version, upgrade.status) == ("1.0.0", "2.0.0", UpgradeStatus.COMPLETED)
    assert (upgrade.upgrade_price_usd, upgrade.discount_usd) == (Decimal("79.20"), Decimal("19.80"))
    assert upgrade.purchased_at is not None
    owned_license.refresh_from_db()
    assert owned_license.eligible_until_version == "2.999.999"
    assert PaymentEvent.objects.get().amount == 7920


def test_upgrade_after_the_early_window_is_full_price(user, settings):
    settings.LICENSE_CURRENT_VERSION = "2.0.0"
    license_ = PerpetualLicenseFactory(user=user, activated_at=timezone.now() - timedelta(days=91))

    purchase = services.license_upgrade(user=user, license_key=license_.license_key)

    assert (purchase.upgrade.upgrade_price_usd, purchase.upgrade.discount_usd) == (Decimal("99.00"), Decimal("0.00"))


def test_an_upgraded_license_covers_the_new_line_and_can_upgrade_again_later(owned_license, settings):
    settings.LICENSE_CURRENT_VERSION = "2.0.0"
    services.license_upgrade(user=owned_license.user, license_key=owned_license.license_key)

    with pytest.raises(Conflict):
        services.license_upgrade(user=owned_license.user, license_key=owned_license.license_key)

    settings.LICENSE_CURRENT_VERSION = "3.0.0rc1"
    second = services.license_upgrade(user=owned_license.user, license_key=owned_license.license_key)
    assert (second.upgrade.from_version, second.upgrade.to_version) == ("2.0.0", "3.0.0")
    assert second.license.eligible_until_version == "3.999.999"


def test_a_suspended_license_cannot_be_upgraded(user, settings):
    settings.LICENSE_CURRENT_VERSION = "2.0.0"
    license_ = PerpetualLicenseFactory(user=user, status=LicenseStatus.SUSPENDED)

    with pytest.raises(Conflict) as refused:
        services.license_upgrade(user=user, license_key=license_.license_key)

    assert refused.value.code == ErrorCode.LICENSE_NOT_ACTIVE


def test_stripe_upgrade_waits_for_the_webhook_then_completes_once(owned_license, settings, stripe_http):
    settings.LICENSE_CURRENT_VERSION = "2.0.0"
    with time_machine.travel(timezone.now() + timedelta(days=120)):
        purchase = services.license_upgrade(user=owned_license.user, license_key=owned_license.license_key)

    (_, request) = stripe_http.requests
    assert request["form"]["metadata[kind]"] == "license_upgrade"
    assert request["form"]["metadata[upgrade_id]"] == str(purchase.upgrade.pk)
    assert request["form"]["line_items[0][price_data][unit_amount]"] == "9900"
    assert purchase.upgrade.status == UpgradeStatus.PENDING
    assert purchase.license.eligible_until_version == "1.999.999"

    session = stripe_http.checkout_complete(purchase.checkout.session_id)
    deliver_event("checkout.session.completed", session)
    deliver_event("checkout.session.completed", session)

    upgrade = VersionUpgrade.objects.get()
    assert (upgrade.status, upgrade.checkout_session_id) == (UpgradeStatus.COMPLETED, purchase.checkout.session_id)
    owned_license.refresh_from_db()
    assert owned_license.eligible_until_version == "2.999.999"
