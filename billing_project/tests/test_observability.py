"""Request ids in responses, logs and tasks; per-route latency metrics, in one process and summed over several."""

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import datetime

import pytest
from django.conf import settings as django_settings
from django.http import JsonResponse
from django.urls import path
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from billing_project.celery import app as celery_app
from billing_project.observability import (
    TASK_REQUEST_ID_HEADER,
    JsonFormatter,
    RequestIdFilter,
    current_request_id,
    normalize_route,
    task_publish_add_request_id,
)
from billing_project.urls import urlpatterns as real_urlpatterns

probe_logger = logging.getLogger("billing_project.tests.observability_probe")


@celery_app.task(name="billing_project.tests.test_observability.log_in_task")
def log_in_task():
    probe_logger.warning("inside the task")
    return current_request_id.get()


def view_that_logs_and_sends_a_task(request):
    probe_logger.warning("inside the view")
    task_result = log_in_task.delay()
    return JsonResponse({"task_saw": task_result.get()})


urlpatterns = [path("probe/observability/", view_that_logs_and_sends_a_task), *real_urlpatterns]


@pytest.fixture
def probe_urls(settings):
    settings.ROOT_URLCONF = __name__


@pytest.fixture
def captured_records():
    """Records as the console handler sees them: through RequestIdFilter."""
    records = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Capture(level=logging.DEBUG)
    handler.addFilter(RequestIdFilter())
    probe_logger.addHandler(handler)
    try:
        yield records
    finally:
        probe_logger.removeHandler(handler)


def duration_count(**labels) -> float:
    return REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) or 0.0


def requests_total(**labels) -> float:
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


# ---------------------------------------------------------------- metrics


def test_request_to_a_route_records_latency_under_its_pattern(client):
    labels = {"method": "GET", "route": "health", "status": "2xx"}
    before, before_total = duration_count(**labels), requests_total(method="GET", route="health", status="200")

    response = client.get("/health")

    assert response.status_code == 200
    assert duration_count(**labels) == before + 1
    assert requests_total(method="GET", route="health", status="200") == before_total + 1


def test_router_route_is_labelled_as_pattern_not_path(client):
    # given an admin detail URL (a DRF router regex), called without credentials
    labels = {"method": "GET", "route": "api/v1/admin/coupons/<pk>/", "status": "4xx"}
    before = duration_count(**labels)

    response = client.get(f"/api/v1/admin/coupons/{uuid.uuid4()}/")

    assert response.status_code == 401
    assert duration_count(**labels) == before + 1


def test_unknown_path_is_labelled_unmatched(client):
    labels = {"method": "GET", "route": "unmatched", "status": "4xx"}
    before = duration_count(**labels)

    response = client.get(f"/no/such/page/{uuid.uuid4().hex}")

    assert response.status_code == 404
    assert duration_count(**labels) == before + 1
    assert REGISTRY.get_sample_value("http_request_duration_seconds_count", {**labels, "route": "no"}) is None


@pytest.mark.parametrize(
    ("route", "label"),
    [
        ("api/v1/coupons/redeem/", "api/v1/coupons/redeem/"),
        ("api/v1/^admin/coupons/(?P<pk>[0-9a-fA-F-]{36})/$", "api/v1/admin/coupons/<pk>/"),
        ("api/v1/^admin/providers/(?P<pk>[^/.]+)/$", "api/v1/admin/providers/<pk>/"),
        ("^a/(?P<pk>(x|y)\\))/b/(?P<n>[()])/$", "a/<pk>/b/<n>/"),
        ("admin/auth/user/<path:object_id>/change/", "admin/auth/user/<path:object_id>/change/"),
    ],
)
def test_normalize_route_writes_regex_routes_in_path_style(route, label):
    assert normalize_route(route) == label


def test_metrics_sum_the_histogram_of_every_worker_process(client, settings, monkeypatch, tmp_path):
    # given two separate processes that observed the histogram into one PROMETHEUS_MULTIPROC_DIR
    settings.METRICS_TOKEN = ""
    route = f"probe/{uuid.uuid4().hex}/"
    script = (
        "import sys\n"
        "from billing_project.metrics import HTTP_REQUEST_DURATION\n"
        "HTTP_REQUEST_DURATION.labels(method='GET', route=sys.argv[1], status='2xx').observe(float(sys.argv[2]))\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for seconds in ("0.02", "3"):
        subprocess.run(
            [sys.executable, "-c", script, route, seconds], env=env, cwd=django_settings.BASE_DIR, check=True
        )
    assert len(list(tmp_path.glob("histogram_*.db"))) == 2  # one file per process

    # when this process answers the scrape in multiprocess mode
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    response = client.get("/metrics")

    # then both observations are there, summed
    assert response.status_code == 200
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.labels.get("route") == route
    }
    assert samples[("http_request_duration_seconds_count", None)] == 2
    assert samples[("http_request_duration_seconds_sum", None)] == pytest.approx(3.02)
    assert samples[("http_request_duration_seconds_bucket", "0.025")] == 1
    assert samples[("http_request_duration_seconds_bucket", "5.0")] == 2


# ---------------------------------------------------------------- request id


def test_request_id_is_echoed_when_the_caller_sends_a_sane_one(client):
    response = client.get("/health", headers={"X-Request-ID": "edge-proxy.42_abc-DEF"})

    assert response["X-Request-ID"] == "edge-proxy.42_abc-DEF"


@pytest.mark.parametrize("sent", [None, "", "has spaces", "semi;colon", "x" * 129, "new\nline"])
def test_request_id_is_generated_when_missing_or_not_sane(client, sent):
    headers = {} if sent is None else {"X-Request-ID": sent}

    response = client.get("/health", headers=headers)

    generated = response["X-Request-ID"]
    assert generated != sent
    assert uuid.UUID(hex=generated).hex == generated


def test_request_id_is_echoed_on_unmatched_paths_too(client):
    response = client.get("/no/such/page", headers={"X-Request-ID": "abc123"})

    assert response.status_code == 404
    assert response["X-Request-ID"] == "abc123"


def test_logs_of_a_request_and_of_its_eager_task_carry_the_request_id(client, probe_urls, captured_records):
    response = client.get("/probe/observability/", headers={"X-Request-ID": "req-0001"})

    assert response.status_code == 200
    assert response.json() == {"task_saw": "req-0001"}
    assert [(record.getMessage(), record.request_id) for record in captured_records] == [
        ("inside the view", "req-0001"),
        ("inside the task", "req-0001"),
    ]
    assert current_request_id.get() is None  # nothing outlives the request


def test_django_response_log_after_the_middleware_carries_the_request_id(client, captured_records):
    # Django logs "Not Found: /path" after the middleware chain returned, with the request attached.
    django_request_logger = logging.getLogger("django.request")
    django_request_logger.addHandler(probe_logger.handlers[-1])
    try:
        client.get("/no/such/page", headers={"X-Request-ID": "req-404"})
    finally:
        django_request_logger.removeHandler(probe_logger.handlers[-1])

    assert [(record.getMessage(), record.request_id) for record in captured_records] == [
        ("Not Found: /no/such/page", "req-404")
    ]


def test_log_outside_a_request_has_no_request_id(captured_records):
    probe_logger.warning("from a command")

    assert captured_records[0].request_id is None


def test_json_formatter_renders_the_fields_as_one_json_object():
    record = logging.LogRecord(
        "billing.x", logging.ERROR, __file__, 1, "failed for %s", ("REPHLO-AB12-CD34-EF56-GH78",), None
    )
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    token = current_request_id.set("req-json")
    try:
        RequestIdFilter().filter(record)
    finally:
        current_request_id.reset(token)

    line = JsonFormatter().format(record)

    body = json.loads(line)
    assert "\n" not in line
    assert body["level"] == "ERROR"
    assert body["logger"] == "billing.x"
    assert body["message"] == "failed for REPHLO-****-****-****-GH78"
    assert body["request_id"] == "req-json"
    assert datetime.fromisoformat(body["timestamp"]).timestamp() == pytest.approx(record.created, abs=0.001)
    assert "RuntimeError: boom" in body["exc_info"]


def test_json_formatter_leaves_out_the_request_extra():
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Not Found", (), None)
    record.request = object()
    record.status_code = 404

    body = json.loads(JsonFormatter().format(record))

    assert "request" not in body
    assert body["status_code"] == 404
    assert body["request_id"] is None


def test_console_handler_uses_the_request_id_filter_and_keeps_masking():
    console = django_settings.LOGGING["handlers"]["console"]

    assert console["filters"] == ["request_id", "mask_license_keys"]
    assert console["formatter"] == django_settings.LOG_FORMAT


# ---------------------------------------------------------------- Celery


def test_task_published_during_a_request_carries_its_id_in_the_headers():
    headers = {"task": "some.task", "id": "task-1"}
    token = current_request_id.set("req-publish")
    try:
        task_publish_add_request_id(sender="some.task", body=(), headers=headers)
    finally:
        current_request_id.reset(token)

    assert headers[TASK_REQUEST_ID_HEADER] == "req-publish"


def test_task_published_outside_a_request_gets_no_id_header():
    headers = {"task": "some.task", "id": "task-1"}

    task_publish_add_request_id(sender="some.task", body=(), headers=headers)

    assert TASK_REQUEST_ID_HEADER not in headers


def test_task_run_with_the_header_logs_with_its_id(captured_records):
    # given a task message that carries a request id, run outside any request
    result = log_in_task.apply(headers={TASK_REQUEST_ID_HEADER: "req-from-header"})

    assert result.get() == "req-from-header"
    assert captured_records[0].request_id == "req-from-header"
    assert current_request_id.get() is None  # cleared again after the task


def test_publish_handler_is_connected_to_celery():
    from celery.signals import before_task_publish, task_postrun, task_prerun

    for signal in (before_task_publish, task_prerun, task_postrun):
        assert any(str(lookup_key[0]).startswith("observability-") for lookup_key, _ in signal.receivers), signal
