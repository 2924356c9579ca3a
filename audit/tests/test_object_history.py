"""django-auditlog's object history records who changed what, also for API callers (JWT)."""

import pytest
from auditlog.models import LogEntry

from audit.services import snapshot
from subscriptions.models import Subscription
from subscriptions.services import account_register, tier_catalog_seed

pytestmark = pytest.mark.django_db


def test_history_entries_of_an_api_write_name_the_jwt_caller_and_the_real_ip(staff_client, staff_user):
    tier_catalog_seed()
    customer = account_register(email="gone@example.com", password="a long enough passphrase")
    subscription_id = Subscription.objects.get(user=customer).pk

    response = staff_client.delete(
        f"/api/v1/admin/users/{customer.pk}/", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="6.6.6.6"
    )

    assert response.status_code == 204
    entry = LogEntry.objects.get(object_pk=str(subscription_id), action=LogEntry.Action.DELETE)
    assert entry.actor == staff_user
    assert entry.remote_addr == "198.51.100.7"  # X-Forwarded-For is not trusted with NUM_PROXIES = 0


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
