"""Inputs that once answered 5xx (issue: "no 5xx for any input"): each is now a 4xx problem naming
what is wrong, and nothing is written."""

import pytest

from billing_project.models import IdempotencyKey
from billing_project.parsers import MAX_DEPTH

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
JSON = "application/json"
SURROGATE = b'"\\ud800"'


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


def post_raw(client, path: str, body: bytes, **headers):
    return client.generic("POST", path, body, content_type=JSON, **headers)


# Too large


def too_large(settings) -> bytes:
    return b'{"code": "' + b"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b'"}'


def test_a_body_over_the_limit_is_a_413_problem_for_an_anonymous_caller(api_client, settings, django_user_model):
    response = post_raw(api_client, "/api/v1/auth/register/", too_large(settings))

    body = assert_problem(response, 413, "request_too_large")
    assert body["max_bytes"] == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert not django_user_model.objects.exists()


def test_a_body_over_the_limit_is_a_413_problem_when_an_idempotency_key_is_sent(user_client, settings):
    response = post_raw(user_client, "/api/v1/coupons/validate/", too_large(settings), HTTP_IDEMPOTENCY_KEY="big-1")

    assert_problem(response, 413, "request_too_large")
    assert not IdempotencyKey.objects.exists()


def test_a_browser_can_read_the_413_of_an_allowed_origin(api_client, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]

    response = post_raw(
        api_client, "/api/v1/auth/register/", too_large(settings), HTTP_ORIGIN="https://app.example.com"
    )

    assert response.status_code == 413
    assert response["Access-Control-Allow-Origin"] == "https://app.example.com"


def test_a_body_within_the_limit_is_read(user_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    response = post_raw(user_client, "/api/v1/coupons/validate/", b'{"code": "NOPE"}')

    assert response.status_code == 200, response.content


# Deep nesting


def test_a_hundred_kilobytes_of_brackets_is_a_400_problem(user_client):
    response = post_raw(user_client, "/api/v1/coupons/validate/", b"[" * 100_000)

    assert_problem(response, 400, "parse_error")


def test_nesting_deeper_than_the_limit_is_a_400_problem_naming_the_field(user_client):
    nested = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)

    response = post_raw(user_client, "/api/v1/coupons/validate/", b'{"code": "X", "tier": ' + nested + b"}")

    body = assert_problem(response, 400, "validation_error")
    assert list(body["errors"]) == ["tier"]


def test_nesting_to_the_limit_is_parsed_and_one_level_deeper_is_refused(user_client):
    def nested(levels: int) -> bytes:  # the innermost list sits `levels` below the top
        return b'{"code": "X", "tier": ' + b"[" * levels + b"]" * levels + b"}"

    at_limit = post_raw(user_client, "/api/v1/coupons/validate/", nested(MAX_DEPTH))
    deeper = post_raw(user_client, "/api/v1/coupons/validate/", nested(MAX_DEPTH + 1))

    assert "Nested deeper" not in str(assert_problem(at_limit, 400, "validation_error")["errors"])
    assert assert_problem(deeper, 400, "validation_error")["errors"] == {
        "tier": [f"Nested deeper than {MAX_DEPTH} levels."]
    }


# Lone surrogates and NUL characters, in choice fields, echoed fields and staff fields


@pytest.mark.parametrize(
    ("caller", "path", "body", "field"),
    [
        ("user", "/api/v1/subscriptions/", b'{"tier": %s, "billing_cycle": "monthly"}', "tier"),
        ("user", "/api/v1/coupons/validate/", b'{"code": "X", "tier": %s}', "tier"),
        ("user", "/api/v1/coupons/redeem/", b'{"code": "X", "billing_cycle": %s}', "billing_cycle"),
        ("user", "/api/v1/licenses/activate/", b'{"license_key": %s, "device_fingerprint": "d"}', "license_key"),
        ("user", "/api/v1/licenses/validate/", b'{"license_key": "K", "device_fingerprint": %s}', "device_fingerprint"),
        ("service", "/api/v1/usage/check/", b'{"user_id": 1, "estimated_credits": 1, "model": %s}', "model"),
        ("staff", "/api/v1/admin/coupons/", b'{"code": %s}', "code"),
        ("staff", "/api/v1/admin/campaigns/", b'{"name": %s}', "name"),
        ("staff", "/api/v1/admin/credits/grant/", b'{"user_id": 1, "amount": 5, "reason": %s}', "reason"),
        ("staff", "/api/v1/admin/providers/", b'{"name": %s}', "name"),
        ("staff", "/api/v1/admin/model-pricing/", b'{"model_name": %s}', "model_name"),
        ("staff", "/api/v1/admin/pricing-configs/", b'{"scope": %s}', "scope"),
        ("staff", "/api/v1/admin/coupons/00000000-0000-0000-0000-000000000000/", b'{"coupon_type": %s}', "coupon_type"),
        (
            "staff",
            "/api/v1/admin/subscriptions/00000000-0000-0000-0000-000000000000/change-status/",
            b'{"status": %s, "reason": "r"}',
            "status",
        ),
    ],
)
@pytest.mark.parametrize("text", [SURROGATE, b'"a\\u0000b"'], ids=["lone_surrogate", "nul"])
def test_unstorable_text_is_a_400_problem_naming_the_field(
    caller, path, body, field, text, user_client, staff_client, service_client
):
    client = {"user": user_client, "staff": staff_client, "service": service_client}[caller]
    method = "PATCH" if path.startswith("/api/v1/admin/coupons/0") else "POST"

    response = client.generic(method, path, body % text, content_type=JSON)

    problem = assert_problem(response, 400, "validation_error")
    assert list(problem["errors"]) == [field]


@pytest.mark.parametrize("text", [SURROGATE, b'"a\\u0000b"'], ids=["lone_surrogate", "nul"])
def test_unstorable_text_in_one_batch_event_is_that_events_own_400_naming_the_field(service_client, text):
    # A batch judges its events one by one (usage/record-batch): the bad one is refused alone.
    response = service_client.generic(
        "POST", "/api/v1/usage/record-batch/", b'{"events": [{}, {"provider": %s}]}' % text, content_type=JSON
    )

    assert response.status_code == 200, response.content
    first, second = response.json()["results"]
    assert (second["status"], second["code"]) == (400, "validation_error")
    assert "provider" in second["errors"]
    assert first["status"] == 400  # the empty event is refused on its own too


def test_a_surrogate_escape_in_one_event_of_a_utf16_batch_is_that_events_own_400(service_client):
    # Outside UTF-8 the parser walks the body and leaves a batch's events to the view, which must look itself.
    body = '{"events": [{"provider": "\\udfff"}]}'.encode("utf-16")

    response = service_client.generic(
        "POST", "/api/v1/usage/record-batch/", body, content_type="application/json; charset=utf-16"
    )

    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    assert (result["status"], result["code"], list(result["errors"])) == (400, "validation_error", ["provider"])


def test_a_lone_surrogate_in_a_key_is_a_400_problem_that_does_not_echo_it(user_client):
    response = post_raw(user_client, "/api/v1/coupons/validate/", b'{"code": "X", "extra": {"\\udfff": 1}}')

    problem = assert_problem(response, 400, "validation_error")
    assert list(problem["errors"]) == ["extra.\ufffd"]


def test_an_upper_case_surrogate_escape_is_refused_like_a_lower_case_one(user_client):
    response = post_raw(user_client, "/api/v1/coupons/validate/", b'{"code": "X", "extra": {"\\uDFFF": 1}}')

    problem = assert_problem(response, 400, "validation_error")
    assert list(problem["errors"]) == ["extra.\ufffd"]


def test_a_surrogate_escape_in_a_utf16_body_is_refused(user_client):
    body = '{"code": "X", "extra": {"\\udfff": 1}}'.encode("utf-16")

    response = user_client.generic(
        "POST", "/api/v1/coupons/validate/", body, content_type="application/json; charset=utf-16"
    )

    problem = assert_problem(response, 400, "validation_error")
    assert list(problem["errors"]) == ["extra.\ufffd"]


def test_an_escaped_backslash_before_u0000_is_plain_text(user_client):
    response = post_raw(user_client, "/api/v1/coupons/validate/", b'{"code": "a\\\\u0000b"}')

    assert response.status_code == 200, response.content
    assert response.json()["reason_code"] == "coupon_not_found"


def test_paired_surrogates_are_the_character_they_encode(user_client):
    response = post_raw(user_client, "/api/v1/coupons/validate/", b'{"code": "\\ud83d\\ude00"}')

    assert response.status_code == 200, response.content
    assert response.json()["reason_code"] == "coupon_not_found"


# Dates out of range


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/api/v1/me/usage/", {"date_to": "9999-12-31"}, "date_to"),
        ("/api/v1/me/usage/", {"date_from": "0001-01-01"}, "date_from"),
        ("/api/v1/me/usage/daily/", {"date_to": "0001-01-01"}, "date_to"),
        ("/api/v1/me/usage/daily/", {"date_from": "9999-12-30", "date_to": "9999-12-31"}, "date_from"),
    ],
)
def test_a_date_out_of_range_is_a_400_problem_naming_the_field(user_client, path, query, field):
    response = user_client.get(path, query)

    problem = assert_problem(response, 400, "validation_error")
    assert field in problem["errors"]


def test_a_time_out_of_range_is_a_400_problem_naming_the_field(staff_client, user):
    response = staff_client.post(
        "/api/v1/admin/credits/grant/",
        {"user_id": user.pk, "amount": 5, "reason": "goodwill", "expires_at": "9999-12-31T00:00:00Z"},
        format="json",
    )

    problem = assert_problem(response, 400, "validation_error")
    assert list(problem["errors"]) == ["expires_at"]


def test_a_date_inside_the_range_is_served(user_client):
    response = user_client.get("/api/v1/me/usage/daily/", {"date_from": "2020-01-01", "date_to": "2020-01-31"})

    assert response.status_code == 200, response.content


def test_a_request_django_refuses_is_a_400_problem_under_the_api(api_client, settings):
    settings.ALLOWED_HOSTS = ["testserver"]

    response = api_client.get("/api/v1/tiers/", HTTP_HOST="evil.example")

    assert_problem(response, 400, "bad_request")
