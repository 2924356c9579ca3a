"""django-auditlog's object history records who changed what, also for API callers (JWT)."""

from decimal import Decimal

import pytest
from auditlog.models import LogEntry

from audit.services import snapshot
from audit.tests.console import admin_url, change_form_data
from subscriptions.models import Subscription, TierConfig
from subscriptions.services import account_register, tier_catalog_seed
from subscriptions.tests.factories import TierConfigFactory

pytestmark = pytest.mark.django_db


def test_history_entries_of_an_api_write_name_the_jwt_caller_and_the_real_ip(staff_client, staff_user):
    tier_catalog_seed()
    customer = account_register(email="gone@example.com", password="a long enough passphrase")
    subscription_id = Subscription.objects.get(user=customer).pk

    response = staff_client.delete(
        f"/api/v1/admin/users/{customer.pk}/",
        REMOTE_ADDR="198.51.100.7",
        HTTP_X_FORWARDED_FOR="6.6.6.6",
        HTTP_X_REQUEST_ID="erase-gone-1",
    )

    assert response.status_code == 204
    entry = LogEntry.objects.get(object_pk=str(subscription_id), action=LogEntry.Action.DELETE)
    assert entry.actor == staff_user
    assert entry.remote_addr == "198.51.100.7"  # X-Forwarded-For is not trusted with NUM_PROXIES = 0
    assert entry.cid == "erase-gone-1"  # the request's id, as in its log lines


def test_history_entries_of_a_console_change_name_the_signed_in_staff_member(admin_client, admin_user):
    tier = TierConfigFactory(monthly_price_usd=Decimal("19.00"))
    url = admin_url(TierConfig, "change", tier.pk)

    admin_client.post(
        url, change_form_data(admin_client.get(url)) | {"monthly_price_usd": "21.00"}, HTTP_X_REQUEST_ID="tier-1"
    )

    entry = LogEntry.objects.get_for_object(tier).get(action=LogEntry.Action.UPDATE)
    assert (entry.actor, entry.actor_email, entry.remote_addr, entry.cid) == (
        admin_user,
        admin_user.email,
        "127.0.0.1",
        "tier-1",
    )


def test_history_entries_written_outside_a_request_name_nobody(user):
    tier = TierConfigFactory(monthly_price_usd=Decimal("19.00"))
    tier.monthly_price_usd = Decimal("23.00")
    tier.save()

    entry = LogEntry.objects.get_for_object(tier).get(action=LogEntry.Action.UPDATE)
    assert (entry.actor, entry.remote_addr, entry.cid) == (None, None, None)


def test_snapshots_redact_passwords_and_mask_license_keys(user):
    from licensing.models import PerpetualLicense

    license_ = PerpetualLicense(
        user=user,
        license_key="REPHLO-ABCD-EFGH-JKMN-PQR7",
        purchase_price_usd=0,
        purchased_version="1.0.0",
        eligible_until_version="1.99.99",
    )

    assert snapshot(user)["password"] == "[redacted]"
    assert snapshot(license_)["license_key"] == "REPHLO-****-****-****-PQR7"
