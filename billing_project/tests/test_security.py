"""Security settings as a browser and a scraper see them: CORS for configured origins only, the
production security headers, and every metric SPEC 6 names exposed on /metrics."""

import json
import subprocess
import sys

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db

APP = "https://app.example.com"
SPEC_METRICS = (
    "billing_webhook_replay_block_total",
    "billing_webhook_invalid_sig_total",
    "idempotent_hits_total",
    "usage_recording_attempts_total",
    "service_auth_attempts_total",
    "redis_errors_total",
    "credits_deducted_total",
    "coupon_redemptions_total",
    "trial_expirations_total",
    "http_request_duration_seconds",
)


def _preflight(client, origin):
    return client.options(
        "/api/v1/coupons/redeem/",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )


def test_cors_answers_a_configured_origin_only(client, settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]

    allowed = _preflight(client, APP)
    refused = _preflight(client, "https://evil.example.net")

    assert allowed["Access-Control-Allow-Origin"] == APP
    assert "authorization" in allowed["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Origin" not in refused
    assert "Access-Control-Allow-Credentials" not in allowed


def test_cors_is_answered_on_the_api_only_not_on_stripes_webhook(client, settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]

    api = client.get("/api/v1/billing/portal/offline/", HTTP_ORIGIN=APP)
    health = client.get("/health", HTTP_ORIGIN=APP)
    stripe_webhook = client.post(
        "/api/v1/billing/webhooks/stripe/", b"{}", content_type="application/json", HTTP_ORIGIN=APP
    )

    assert api["Access-Control-Allow-Origin"] == APP
    assert "Access-Control-Allow-Origin" not in health
    assert stripe_webhook.status_code == 400
    assert "Access-Control-Allow-Origin" not in stripe_webhook
    assert "Origin" not in stripe_webhook.get("Vary", "")


def test_an_api_answer_to_a_caller_without_an_origin_varies_by_origin_and_allows_none(client, settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]

    without_origin = client.get("/api/v1/billing/portal/offline/")
    with_origin = client.get("/api/v1/billing/portal/offline/", HTTP_ORIGIN=APP)

    assert without_origin.status_code == with_origin.status_code == 200
    assert "origin" in without_origin["Vary"].lower()
    assert "Access-Control-Allow-Origin" not in without_origin
    assert with_origin["Access-Control-Allow-Origin"] == APP
    assert "origin" in with_origin["Vary"].lower()


def test_no_origin_is_allowed_by_default():
    assert settings.CORS_ALLOWED_ORIGINS == []
    assert not getattr(settings, "CORS_ALLOW_ALL_ORIGINS", False)


def test_production_mode_turns_on_https_and_the_security_headers():
    """The settings module as production loads it (DEBUG off, real secrets), in a fresh interpreter."""
    script = (
        "import json, django; from django.conf import settings; django.setup(); "
        "print(json.dumps({name: getattr(settings, name) for name in ("
        "'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SESSION_COOKIE_SECURE', "
        "'CSRF_COOKIE_SECURE', 'SECURE_CONTENT_TYPE_NOSNIFF', 'X_FRAME_OPTIONS')}))"
    )
    environment = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "billing_project.settings",
        "DEBUG": "false",
        "SECRET_KEY": "s" * 50,
        "JWT_SECRET": "j" * 50,
        "SERVICE_JWT_SECRET": "v" * 50,
        "ALLOWED_HOSTS": "billing.example.com",
        "DATABASE_URL": "postgres://billing@db.example.com:5432/billing",
    }
    output = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert json.loads(output.strip().splitlines()[-1]) == {
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "X_FRAME_OPTIONS": "DENY",
    }


def test_every_metric_the_spec_names_is_exposed(client, settings):
    settings.METRICS_TOKEN = ""

    exposed = client.get("/metrics").content.decode()

    missing = [name for name in SPEC_METRICS if f"# TYPE {name.removesuffix('_total')}" not in exposed]
    assert missing == []
