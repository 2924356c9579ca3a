from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from billing_project.models import IdempotencyKey
from conftest import access_token_for, bearer
from licensing.api.throttles import LicenseIpRateThrottle, LicenseKeyRateThrottle
from licensing.models import LicenseActivation, LicenseStatus, PerpetualLicense, VersionUpgrade
from licensing.tests.factories import LicenseActivationFactory, PerpetualLicenseFactory, mistyped
from payments.models import PaymentOperation

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


def activate_body(license_, fingerprint="laptop", **extra) -> dict:
    return {"license_key": license_.license_key, "device_fingerprint": fingerprint, **extra}


def test_purchase_offline_answers_201_with_the_active_license_and_its_full_key(user_client, user):
    response = user_client.post("/api/v1/licenses/purchase/", {}, format="json")

    assert response.status_code == 201
    body = response.json()
    license_ = PerpetualLicense.objects.get(user=user)
    assert body["license"]["license_key"] == license_.license_key
    assert body["license"]["status"] == "active"
    assert body["license"]["purchase_price_usd"] == "199.00"
    assert body["license"]["eligible_until_version"] == "1.999.999"
    assert body["license"]["activations"] == []
    operation = PaymentOperation.objects.get(user=user)
    assert body["checkout"] == {
        "url": None,
        "session_id": license_.checkout_session_id,
        "completed": True,
        "operation_id": str(operation.pk),
    }


def test_purchase_through_stripe_answers_201_with_the_checkout_url_and_a_pending_license(
    user_client, user, stripe_http
):
    response = user_client.post("/api/v1/licenses/purchase/", {"version": "1.0.0"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["license"]["status"] == "pending"
    assert body["checkout"]["completed"] is False
    assert body["checkout"]["url"].startswith("https://checkout.stripe.com/")
    assert PerpetualLicense.objects.get(user=user).status == LicenseStatus.PENDING
    (session_request,) = (request for request in stripe_http.requests if request["path"] == "checkout/sessions")
    assert session_request["form"]["client_reference_id"] == str(user.pk)


def test_purchase_of_a_version_not_on_sale_is_a_422_problem(user_client):
    response = user_client.post("/api/v1/licenses/purchase/", {"version": "7.0.0"}, format="json")

    assert_problem(response, 422, "version_not_on_sale")
    assert not PerpetualLicense.objects.exists()


def test_purchase_of_an_invalid_version_names_the_field(user_client):
    response = user_client.post("/api/v1/licenses/purchase/", {"version": "soon"}, format="json")

    body = assert_problem(response, 400, "validation_error")
    assert "version" in body["errors"]


def test_activate_answers_201_then_200_for_the_same_device(user_client, owned_license):
    first = user_client.post("/api/v1/licenses/activate/", activate_body(owned_license, os="windows"), format="json")
    again = user_client.post("/api/v1/licenses/activate/", activate_body(owned_license), format="json")

    assert first.status_code == 201
    assert again.status_code == 200
    assert first.json() == again.json()
    activation = LicenseActivation.objects.get()
    assert first.json() == {"activation_id": str(activation.pk), "activations_used": 1, "max_activations": 3}
    assert activation.os_type == "windows"


def test_activate_beyond_the_seats_is_a_409_listing_the_active_devices(user_client, owned_license):
    for name in ("one", "two", "three"):
        LicenseActivationFactory(license=owned_license, device_fingerprint=name, device_name=f"PC {name}")

    response = user_client.post("/api/v1/licenses/activate/", activate_body(owned_license, "four"), format="json")

    body = assert_problem(response, 409, "activation_limit_reached")
    assert [device["device_name"] for device in body["active_devices"]] == ["PC one", "PC two", "PC three"]
    assert {"last_seen_at", "device_fingerprint", "activation_id"} <= set(body["active_devices"][0])
    assert LicenseActivation.objects.count() == 3


def test_activate_with_someone_elses_key_is_404(api_client, owned_license, other_user):
    response = api_client.post(
        "/api/v1/licenses/activate/",
        activate_body(owned_license),
        format="json",
        **bearer(access_token_for(other_user)),
    )

    assert_problem(response, 404, "license_not_found")
    assert not LicenseActivation.objects.exists()


def test_activate_with_a_mistyped_key_is_a_422_bad_checksum(user_client, owned_license):
    body = {"license_key": mistyped(owned_license.license_key), "device_fingerprint": "laptop"}

    response = user_client.post("/api/v1/licenses/activate/", body, format="json")

    assert_problem(response, 422, "bad_checksum")


def test_activate_needs_a_user_token(api_client, owned_license, service_client):
    anonymous = api_client.post("/api/v1/licenses/activate/", activate_body(owned_license), format="json")
    service = service_client.post("/api/v1/licenses/activate/", activate_body(owned_license), format="json")

    assert anonymous.status_code == 401
    assert service.status_code == 403


def test_activating_a_suspended_license_is_a_409_naming_its_status(user_client, user):
    license_ = PerpetualLicenseFactory(user=user, status=LicenseStatus.SUSPENDED)

    response = user_client.post("/api/v1/licenses/activate/", activate_body(license_), format="json")

    assert assert_problem(response, 409, "license_not_active")["license_status"] == "suspended"
    assert not LicenseActivation.objects.exists()


def test_device_change_limit_is_a_429_problem_with_retry_after(user_client, owned_license, settings):
    settings.LICENSE_DEVICE_CHANGES_PER_DAY = 1
    user_client.post("/api/v1/licenses/activate/", activate_body(owned_license, "one"), format="json")
    user_client.post("/api/v1/licenses/activate/", activate_body(owned_license, "two"), format="json")
    user_client.post("/api/v1/licenses/deactivate/", activate_body(owned_license, "one"), format="json")

    response = user_client.post("/api/v1/licenses/deactivate/", activate_body(owned_license, "two"), format="json")

    body = assert_problem(response, 429, "device_change_limit")
    assert 86300 < body["retry_after"] <= 86400
    assert response["Retry-After"] == str(body["retry_after"])
    assert LicenseActivation.objects.filter(deactivated_at__isnull=True).count() == 1


def test_after_three_activations_and_a_swap_a_second_replacement_is_activated(user_client, owned_license):
    def call(action: str, device: str) -> int:
        body = activate_body(owned_license, device)
        return user_client.post(f"/api/v1/licenses/{action}/", body, format="json").status_code

    setup = [call("activate", device) for device in ("one", "two", "three")]
    swap = [call("deactivate", "one"), call("activate", "four"), call("deactivate", "two")]

    replacement = call("activate", "five")

    assert (setup, swap, replacement) == ([201, 201, 201], [200, 201, 200], 201)
    assert LicenseActivation.objects.filter(deactivated_at__isnull=True).count() == 3


def test_deactivate_frees_the_seat(user_client, owned_license):
    activation = LicenseActivationFactory(license=owned_license, device_fingerprint="laptop")

    response = user_client.post("/api/v1/licenses/deactivate/", activate_body(owned_license), format="json")

    assert response.status_code == 200
    assert response.json()["activation_id"] == str(activation.pk)
    assert response.json()["activations_used"] == 0
    activation.refresh_from_db()
    assert activation.deactivated_at is not None


def test_deactivate_of_a_device_that_is_not_active_is_404(user_client, owned_license):
    response = user_client.post("/api/v1/licenses/deactivate/", activate_body(owned_license), format="json")

    assert_problem(response, 404, "activation_not_found")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"license_key": "REPHLO-2222-2222-2222-2223"}, "bad_checksum"),
        ({"license_key": "not a key at all"}, "bad_checksum"),
        ({"device_fingerprint": "desktop"}, "not_activated_on_device"),
        ({"app_version": "2.0.0rc1"}, "version_not_covered"),
    ],
)
def test_validate_always_answers_200_with_a_reason(user_client, owned_license, change, reason):
    LicenseActivationFactory(license=owned_license, device_fingerprint="laptop")
    body = {"license_key": owned_license.license_key.lower(), "device_fingerprint": "laptop", "app_version": "1.9.9"}

    response = user_client.post("/api/v1/licenses/validate/", body | change, format="json")

    assert response.status_code == 200
    assert response.json() == {"valid": reason is None, "reason": reason}


def test_validate_with_a_key_nobody_owns_is_unknown_key(user_client):
    body = {
        "license_key": PerpetualLicenseFactory.build().license_key,
        "device_fingerprint": "laptop",
        "app_version": "1.0.0",
    }

    response = user_client.post("/api/v1/licenses/validate/", body, format="json")

    assert response.json() == {"valid": False, "reason": "unknown_key"}


def test_validate_of_a_revoked_license_says_revoked(user_client, user):
    license_ = PerpetualLicenseFactory(user=user, status=LicenseStatus.REVOKED)
    body = {"license_key": license_.license_key, "device_fingerprint": "laptop", "app_version": "1.0.0"}

    response = user_client.post("/api/v1/licenses/validate/", body, format="json")

    assert response.json() == {"valid": False, "reason": "revoked"}


def test_eligibility_compares_versions(user_client, owned_license):
    url = f"/api/v1/licenses/{owned_license.license_key}/eligibility/"

    covered = user_client.get(url, {"version": "1.10.0"}).json()
    beyond = user_client.get(url, {"version": "2.0.0"}).json()

    assert covered["eligible"] is True
    assert covered["eligible_until_version"] == "1.999.999"
    assert (beyond["eligible"], beyond["reason"], beyond["upgrade_available"]) == (False, "version_not_covered", False)


def test_eligibility_shows_the_upgrade_price_when_an_upgrade_is_on_sale(user_client, owned_license, settings):
    settings.LICENSE_CURRENT_VERSION = "2.0.0"

    body = user_client.get(f"/api/v1/licenses/{owned_license.license_key}/eligibility/", {"version": "2.0.0"}).json()

    assert body["upgrade_available"] is True
    assert (body["upgrade_to_version"], body["upgrade_price_usd"], body["upgrade_discount_usd"]) == (
        "2.0.0",
        "79.20",
        "19.80",
    )


def test_eligibility_with_an_invalid_version_is_a_400_naming_version(user_client, owned_license):
    response = user_client.get(f"/api/v1/licenses/{owned_license.license_key}/eligibility/", {"version": "latest"})

    body = assert_problem(response, 400, "validation_error")
    assert "version" in body["errors"]


def test_eligibility_without_a_version_is_a_400(user_client, owned_license):
    response = user_client.get(f"/api/v1/licenses/{owned_license.license_key}/eligibility/")

    assert "version" in assert_problem(response, 400, "validation_error")["errors"]


def test_eligibility_of_someone_elses_key_is_404(api_client, owned_license, other_user):
    response = api_client.get(
        f"/api/v1/licenses/{owned_license.license_key}/eligibility/",
        {"version": "1.0.0"},
        **bearer(access_token_for(other_user)),
    )

    assert_problem(response, 404, "license_not_found")


def test_upgrade_offline_answers_201_with_the_raised_coverage(user_client, owned_license, settings):
    settings.LICENSE_CURRENT_VERSION = "2.0.0"

    response = user_client.post("/api/v1/licenses/upgrade/", {"license_key": owned_license.license_key}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["upgrade"]["status"] == "completed"
    assert (body["upgrade"]["upgrade_price_usd"], body["upgrade"]["discount_usd"]) == ("79.20", "19.80")
    assert body["license"]["eligible_until_version"] == "2.999.999"
    assert body["checkout"]["completed"] is True
    owned_license.refresh_from_db()
    assert owned_license.eligible_until_version == "2.999.999"


def test_upgrade_with_nothing_newer_on_sale_is_a_409(user_client, owned_license):
    response = user_client.post("/api/v1/licenses/upgrade/", {"license_key": owned_license.license_key}, format="json")

    assert_problem(response, 409, "upgrade_not_available")
    assert not VersionUpgrade.objects.exists()


def test_my_licenses_lists_only_mine_with_full_keys_and_active_devices(user_client, owned_license, other_user):
    PerpetualLicenseFactory(user=other_user)
    LicenseActivationFactory(license=owned_license, device_fingerprint="laptop", device_name="Laptop")
    LicenseActivationFactory(license=owned_license, device_fingerprint="old", deactivated_at=timezone.now())

    response = user_client.get("/api/v1/me/licenses/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    (license_,) = body["results"]
    assert license_["license_key"] == owned_license.license_key
    assert [device["device_name"] for device in license_["activations"]] == ["Laptop"]


def test_activate_is_replayed_under_the_same_idempotency_key(user_client, owned_license):
    headers = {"HTTP_IDEMPOTENCY_KEY": "activate-laptop-1"}

    first = user_client.post("/api/v1/licenses/activate/", activate_body(owned_license), format="json", **headers)
    replay = user_client.post("/api/v1/licenses/activate/", activate_body(owned_license), format="json", **headers)

    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert IdempotencyKey.objects.count() == 1


def test_activate_is_throttled_per_license_key(owned_license, monkeypatch, django_user_model):
    monkeypatch.setattr(LicenseKeyRateThrottle, "THROTTLE_RATES", {"license": "3/min"})
    monkeypatch.setattr(LicenseIpRateThrottle, "THROTTLE_RATES", {"license": "100/min"})
    client = APIClient()
    client.credentials(**bearer(access_token_for(owned_license.user)))

    statuses = [
        client.post("/api/v1/licenses/activate/", activate_body(owned_license), format="json").status_code
        for _ in range(3)
    ]
    throttled = client.post("/api/v1/licenses/activate/", activate_body(owned_license), format="json")
    other_key = client.post(
        "/api/v1/licenses/activate/",
        activate_body(PerpetualLicenseFactory(user=owned_license.user)),
        format="json",
    )

    assert statuses == [201, 200, 200]
    body = assert_problem(throttled, 429, "throttled")
    assert body["retry_after"] > 0
    assert int(throttled["Retry-After"]) > 0
    assert other_key.status_code == 201


def test_validate_is_throttled_per_ip_across_keys(user_client, user, monkeypatch):
    monkeypatch.setattr(LicenseKeyRateThrottle, "THROTTLE_RATES", {"license": "100/min"})
    monkeypatch.setattr(LicenseIpRateThrottle, "THROTTLE_RATES", {"license": "3/min"})
    guesses = [PerpetualLicenseFactory.build().license_key for _ in range(4)]

    responses = [
        user_client.post(
            "/api/v1/licenses/validate/",
            {"license_key": key, "device_fingerprint": "x", "app_version": "1.0.0"},
            format="json",
            REMOTE_ADDR="203.0.113.9",
        )
        for key in guesses
    ]

    assert [response.status_code for response in responses] == [200, 200, 200, 429]
    assert_problem(responses[-1], 429, "throttled")


def test_validate_touches_last_seen(user_client, owned_license):
    activation = LicenseActivationFactory(
        license=owned_license, device_fingerprint="laptop", last_seen_at=timezone.now() - timedelta(days=5)
    )
    body = {"license_key": owned_license.license_key, "device_fingerprint": "laptop", "app_version": "1.0.0"}

    user_client.post("/api/v1/licenses/validate/", body, format="json")

    activation.refresh_from_db()
    assert activation.last_seen_at > timezone.now() - timedelta(minutes=1)
