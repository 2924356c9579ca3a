"""Abuse resistance of the shared machinery: the schema built once per process, rate limits counted
atomically and by a client address no caller can choose."""

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from billing_project.checks import production_problems
from billing_project.schema_views import CachedSchemaView
from conftest import access_token_for, bearer, run_concurrently
from coupons.api.throttles import CouponIpRateThrottle, CouponUserRateThrottle
from coupons.models import CouponRedemption

VALIDATE_URL = "/api/v1/coupons/validate/"
REDEEM_URL = "/api/v1/coupons/redeem/"


def client_for(user, **extra) -> APIClient:
    client = APIClient(**extra)
    client.credentials(**bearer(access_token_for(user)))
    return client


def users(count: int) -> list:
    user_model = get_user_model()
    return [
        user_model.objects.create_user(username=f"u{i}@example.com", email=f"u{i}@example.com") for i in range(count)
    ]


@pytest.fixture
def coupon_rate(monkeypatch):
    def set_rate(rate: str):
        for throttle in (CouponUserRateThrottle, CouponIpRateThrottle):
            monkeypatch.setattr(throttle, "THROTTLE_RATES", {"coupon": rate})

    return set_rate


# The schema


@pytest.fixture
def schema_generations(monkeypatch):
    CachedSchemaView.document.clear()
    CachedSchemaView.rendered.clear()
    calls = []
    generate = SchemaGenerator.get_schema

    def counted(self, *args, **kwargs):
        calls.append(1)
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(SchemaGenerator, "get_schema", counted)
    return calls


def test_the_schema_is_generated_once_per_process(api_client, schema_generations):
    yaml = [api_client.get("/api/schema/") for _ in range(3)]
    json = [api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json") for _ in range(3)]
    other_parameters = api_client.get("/api/schema/", {"lang": "de", "version": "9"})

    assert len(schema_generations) == 1
    assert {response.status_code for response in [*yaml, *json, other_parameters]} == {200}
    assert yaml[0]["Content-Type"].startswith("application/vnd.oai.openapi")
    assert json[0]["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert json[2].json()["info"]["title"] == "Billing API"
    assert other_parameters.content == yaml[0].content
    assert "attachment" not in yaml[0]["Content-Disposition"]


# Atomic rate limits


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_calls_from_one_address_let_exactly_the_limit_through(coupon_rate):
    # given 24 accounts on one address and a limit of 12 a minute per address
    coupon_rate("12/min")
    clients = [client_for(user) for user in users(24)]

    def validate(client):
        return client.post(VALIDATE_URL, {"code": "NOPE"}, format="json").status_code

    # when they all validate at once
    statuses = run_concurrently(validate, clients)

    # then exactly 12 are answered and the rest throttled
    assert sorted(statuses) == [200] * 12 + [429] * 12


@pytest.mark.django_db
def test_a_limit_spent_at_the_end_of_a_window_still_holds_at_the_start_of_the_next(coupon_rate):
    coupon_rate("2/min")
    (user,) = users(1)

    with time_machine.travel("2026-03-01T10:00:59Z", tick=False) as clock:
        client = client_for(user)

        def validate() -> int:
            return client.post(VALIDATE_URL, {"code": "NOPE"}, format="json").status_code

        spent = [validate(), validate(), validate()]
        clock.shift(timedelta(seconds=2))  # a new counting window, which still weighs the last one
        early = validate()
        clock.shift(timedelta(minutes=2))
        later = validate()

    assert spent == [200, 200, 429]
    assert early == 429
    assert later == 200


# X-Forwarded-For from trusted proxies only


@pytest.fixture
def behind_a_proxy(settings):
    settings.NUM_PROXIES = 1
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    return settings


def _recorded_ip(user, **headers) -> str:
    client_for(user).post(REDEEM_URL, {"code": "NO-SUCH-CODE"}, format="json", **headers)
    return CouponRedemption.objects.filter(user=user).latest("created_at").ip_address


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("remote_addr", "forwarded", "seen"),
    [
        ("10.1.2.3", "198.51.100.9", "198.51.100.9"),  # from the proxy: its entry counts
        ("10.1.2.3", "6.6.6.6, 198.51.100.9", "198.51.100.9"),  # a client's own entry is left of it
        ("203.0.113.5", "198.51.100.9", "203.0.113.5"),  # straight to the service: the header is the client's
        ("10.1.2.3", "not-an-address", "10.1.2.3"),
    ],
)
def test_forwarded_for_is_read_only_from_a_trusted_proxy(behind_a_proxy, remote_addr, forwarded, seen):
    (user,) = users(1)

    assert _recorded_ip(user, REMOTE_ADDR=remote_addr, HTTP_X_FORWARDED_FOR=forwarded) == seen


@pytest.mark.django_db
def test_forwarded_for_is_ignored_without_trusted_proxies(settings):
    settings.NUM_PROXIES = 1
    settings.TRUSTED_PROXIES = []
    (user,) = users(1)

    assert _recorded_ip(user, REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="198.51.100.9") == "203.0.113.5"


@pytest.mark.django_db
def test_a_direct_client_cannot_escape_the_address_limit_by_rotating_forwarded_for(behind_a_proxy, coupon_rate):
    coupon_rate("3/min")
    statuses = [
        client_for(user)
        .post(
            VALIDATE_URL,
            {"code": "NOPE"},
            format="json",
            REMOTE_ADDR="203.0.113.5",
            HTTP_X_FORWARDED_FOR=f"198.51.100.{index}",
        )
        .status_code
        for index, user in enumerate(users(5))
    ]

    assert statuses == [200, 200, 200, 429, 429]


def test_production_refuses_proxies_it_cannot_recognise(settings):
    settings.DEBUG = False
    settings.NUM_PROXIES = 1
    settings.TRUSTED_PROXIES = []

    assert any("TRUSTED_PROXIES" in problem for problem in production_problems())
