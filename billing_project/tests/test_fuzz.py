"""Schemathesis against our own /api/schema/: every operation, called in-process through the WSGI app
with real credentials, must never answer 5xx and must answer what the schema documents (status code,
content type, body shape). Inputs are generated both valid (positive) and invalid (negative: wrong
types, missing fields, out-of-range values), and in workflows that follow the schema's links: a
created coupon is then validated, redeemed, patched and deleted, a reserved hold released, and so on.

CI runs a few derandomized examples per operation and a few short workflows, the same ones every run;
`python bench/fuzz.py` runs this test with many more random ones (FUZZ_MAX_EXAMPLES, FUZZ_RANDOM=1)."""

import os
from collections import Counter
from datetime import timedelta

import pytest
import schemathesis
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from billing_project.service_tokens import service_token_issue
from billing_project.wsgi import application
from conftest import access_token_for
from credits.services import pricing_catalog_seed
from subscriptions.services import account_register, tier_catalog_seed

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "5"))
# Workflows (sequences of linked calls) and their length: bounded, so CI stays within a minute or so.
WORKFLOWS = int(os.environ.get("FUZZ_WORKFLOWS", "15"))
WORKFLOW_STEPS = 6
# bench/fuzz.py explores other inputs (seed with --hypothesis-seed); CI stays derandomized so a failure reproduces.
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"
SERVICE_SCOPES = ["usage:write", "usage:read", "licenses:write", "admin"]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
PASSWORD = "correct horse battery staple"

# Examples run per operation, read by bench/fuzz.py for its summary.
EXAMPLES_RUN: Counter = Counter()

# Loaded once at import, from the running app like a client would (the schema view needs no database).
with override_settings(ALLOWED_HOSTS=["localhost"]):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture
def _connections_kept_open():
    """Django's test client does this for every request: the WSGI handler would otherwise close the
    database connection at the end of the request, and with it the test's transaction (PostgreSQL)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def credentials(db, _connections_kept_open, settings, monkeypatch):
    """Bearer tokens per kind of caller, on a seeded catalog; throttles lifted so 429s hide nothing."""
    from rest_framework.throttling import SimpleRateThrottle

    settings.ALLOWED_HOSTS = ["localhost"]
    unlimited = {scope: "1000000/min" for scope in ("auth", "coupon", "license", "user", "anon")}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", unlimited)
    for throttle in _subclasses(SimpleRateThrottle):
        monkeypatch.setattr(throttle, "THROTTLE_RATES", unlimited, raising=False)
    tier_catalog_seed()
    pricing_catalog_seed()
    user = account_register(email="fuzz-user@example.com", password=PASSWORD)
    staff = account_register(email="fuzz-staff@example.com", password=PASSWORD)
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    service = service_token_issue(service="fuzz", scopes=SERVICE_SCOPES, lifetime=timedelta(hours=1)).token
    return {"user": access_token_for(user), "staff": access_token_for(staff), "service": service}


def _subclasses(cls):
    for subclass in cls.__subclasses__():
        yield subclass
        yield from _subclasses(subclass)


def _token_for(path: str, credentials: dict) -> str | None:
    if path.startswith("/api/v1/admin/"):
        return credentials["staff"]
    if path.startswith("/api/v1/usage/"):
        return credentials["service"]
    if path.startswith("/api/v1/billing/webhooks/"):
        return None  # Stripe signs instead: without a valid signature, a documented 400
    return credentials["user"]


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_operation_answers_as_documented(case, credentials):
    token = _token_for(case.path, credentials)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    EXAMPLES_RUN[f"{case.method} {case.path}"] += 1
    # call_and_validate raises on any failed check (documented status, content type, body schema).
    response = case.call_and_validate(headers=headers, checks=CHECKS)
    assert response.status_code < 500, response.text


class LinkedWorkflow(schema.as_state_machine()):
    """Sequences of calls that follow the schema's links, each call made as its kind of caller."""

    credentials: dict = {}

    def setup(self):
        # Each workflow starts from the same database: what one example created (a coupon, a hold)
        # is rolled back, so a replayed example meets the state its first run met.
        self._workflow_atomic = transaction.atomic()
        self._workflow_atomic.__enter__()

    def teardown(self):
        transaction.set_rollback(True)
        self._workflow_atomic.__exit__(None, None, None)

    def get_call_kwargs(self, case):
        token = _token_for(case.path, self.credentials)
        return {"headers": {"Authorization": f"Bearer {token}"}} if token else {}

    def validate_response(self, response, case, additional_checks=None, **kwargs):
        EXAMPLES_RUN[f"workflow: {case.method} {case.path}"] += 1
        case.validate_response(response, checks=CHECKS, headers=kwargs.get("headers"))
        assert response.status_code < 500, response.text


def _workflow_calls() -> int:
    return sum(count for name, count in EXAMPLES_RUN.items() if name.startswith("workflow: "))


def test_api_workflows_along_the_links_answer_as_documented(credentials):
    LinkedWorkflow.credentials = credentials
    calls_before = _workflow_calls()
    LinkedWorkflow.run(
        settings=settings(
            max_examples=WORKFLOWS,
            stateful_step_count=WORKFLOW_STEPS,
            deadline=None,
            derandomize=not RANDOM,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )

    # each call was checked in validate_response; the workflows did make calls
    assert _workflow_calls() - calls_before >= WORKFLOWS
