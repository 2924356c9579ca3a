"""What licensing tells the outside: license.created when a license becomes active (a purchase, a
staff issue), and license.device_limit_reached when an activation is refused for want of a seat:
one e-mail and one event per license and day, however often the client retries."""

from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.test import TestCase
from django.utils import timezone
from rest_framework.test import APIClient

from billing_project.models import Notification, OutboundEvent
from conftest import access_token_for, bearer
from licensing.models import LicenseActivation, PerpetualLicense
from licensing.services import license_issue
from licensing.tests.factories import LicenseActivationFactory

pytestmark = pytest.mark.django_db


def events(event_type: str) -> list[OutboundEvent]:
    return list(OutboundEvent.objects.filter(type=event_type).order_by("created_at"))


def activate(client, license_, fingerprint: str):
    body = {"license_key": license_.license_key, "device_fingerprint": fingerprint}
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post("/api/v1/licenses/activate/", body, format="json")


def test_a_purchase_emits_license_created_once_without_the_key(user_client, user):
    response = user_client.post("/api/v1/licenses/purchase/", {}, format="json")

    assert response.status_code == 201
    license_ = PerpetualLicense.objects.get(user=user)
    (event,) = events("license.created")
    assert (event.subject, event.user) == (f"license:{license_.pk}", user)
    assert event.data == {
        "id": str(license_.pk),
        "user_id": str(user.pk),
        "status": "active",
        "source": "purchase",
        "purchased_version": license_.purchased_version,
        "eligible_until_version": license_.eligible_until_version,
        "max_activations": 3,
        "byok_enabled": True,
        "purchase_price_usd": "199.00",
        "activated_at": license_.activated_at.isoformat(),
    }
    assert license_.license_key not in str(event.data)


def test_a_staff_issued_license_emits_license_created(user, staff_user):
    license_ = license_issue(user=user, actor=staff_user, max_activations=5)

    (event,) = events("license.created")
    assert (event.data["id"], event.data["source"], event.data["max_activations"]) == (str(license_.pk), "staff", 5)


def test_an_activation_refused_for_want_of_a_seat_tells_the_owner_once_a_day(user_client, user, owned_license):
    for name in ("one", "two", "three"):
        LicenseActivationFactory(license=owned_license, device_fingerprint=name)

    first = activate(user_client, owned_license, "four")
    retried = activate(user_client, owned_license, "four")  # the client retries
    other = activate(user_client, owned_license, "five")

    assert [response.status_code for response in (first, retried, other)] == [409, 409, 409]
    assert first.json()["code"] == "activation_limit_reached"
    assert LicenseActivation.objects.filter(license=owned_license).count() == 3
    (message,) = mail.outbox
    assert message.to == [user.email]
    masked = f"REPHLO-****-****-****-{owned_license.license_key[-4:]}"
    assert message.subject == f"Your license {masked} is active on all 3 of its devices"
    assert owned_license.license_key not in message.body
    assert message.alternatives[0][1] == "text/html"
    today = timezone.now().date().isoformat()
    (notification,) = Notification.objects.filter(kind="license.device_limit_reached")
    assert notification.occurrence == f"{owned_license.pk}:{today}"
    (event,) = events("license.device_limit_reached")
    assert (event.subject, event.user) == (f"license:{owned_license.pk}", user)
    assert event.data == {
        "license_id": str(owned_license.pk),
        "license_key_masked": masked,
        "max_activations": 3,
        "activations_used": 3,
        "date": today,
    }

    with time_machine.travel(timezone.now() + timedelta(days=1)):
        next_day = APIClient()  # signed in afresh: yesterday's access token has expired
        next_day.credentials(**bearer(access_token_for(user)))
        assert activate(next_day, owned_license, "four").status_code == 409  # told again

    assert len(mail.outbox) == 2
    assert len(events("license.device_limit_reached")) == 2


def test_an_activation_that_succeeds_tells_nothing(user_client, owned_license):
    assert activate(user_client, owned_license, "laptop").status_code == 201

    assert not Notification.objects.exists()
    assert not events("license.device_limit_reached")
