"""Request observability: a request id carried into logs and Celery tasks, per-route latency metrics,
and the JSON log formatter used in production.

- `ObservabilityMiddleware` (first in MIDDLEWARE) takes the request id from a sane `X-Request-ID`
  header or makes one, holds it in `current_request_id` for the request, echoes it in the response
  and records `http_request_duration_seconds` / `http_requests_total` by route pattern, never by path.
- `RequestIdFilter` puts the id on every log record of the handler it is attached to.
- The Celery signal handlers carry the id in the task headers (`before_task_publish`) and restore it
  around the task on the worker (`task_prerun` / `task_postrun`). An eager task runs inside the
  caller's context and simply keeps the caller's id.
"""

import logging
import re
import secrets
import time
from contextvars import ContextVar, Token
from functools import lru_cache

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

from audit.redaction import mask_license_key
from billing_project.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_META = "HTTP_X_REQUEST_ID"
# Name of the Celery message header that carries the request id to the worker.
TASK_REQUEST_ID_HEADER = "x_request_id"
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


def request_id_now() -> str | None:
    """The id of the request or task being served: django-auditlog's correlation id (AUDITLOG_CID_GETTER),
    so an object's history entry leads to the request's log lines."""
    return current_request_id.get()


def request_id_from_header(value: str | None) -> str:
    """The caller's id when it is a sane token (it ends up in logs and headers), else a fresh one."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return secrets.token_hex(16)


# ---------------------------------------------------------------- HTTP


class ObservabilityMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_from_header(request.META.get(REQUEST_ID_META))
        request.request_id = request_id
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        status_code = 500  # what the client gets if an exception escapes every other layer
        try:
            response = self.get_response(request)
            status_code = response.status_code
            response[REQUEST_ID_HEADER] = request_id
            return response
        finally:
            _record_request(request, status_code, time.perf_counter() - started)
            current_request_id.reset(token)


# (method, route, status) -> its latency histogram and its counter: finding a labelled child is a
# lock and a few lookups each time, and the label sets are bounded (routes are patterns).
_request_metrics: dict[tuple, tuple] = {}


def _record_request(request, status_code: int, seconds: float) -> None:
    method = request.method if request.method in KNOWN_METHODS else "OTHER"
    route = route_label(getattr(request, "resolver_match", None))
    key = (method, route, status_code)
    metrics = _request_metrics.get(key)
    if metrics is None:
        metrics = _request_metrics[key] = (
            HTTP_REQUEST_DURATION.labels(method=method, route=route, status=f"{status_code // 100}xx"),
            HTTP_REQUESTS.labels(method=method, route=route, status=str(status_code)),
        )
    metrics[0].observe(seconds)
    metrics[1].inc()


def route_label(resolver_match) -> str:
    """The matched URL pattern (`api/v1/admin/coupons/<pk>/`), so the label set stays bounded."""
    route = getattr(resolver_match, "route", None)
    return normalize_route(route) if route else UNMATCHED_ROUTE


@lru_cache(maxsize=1024)
def normalize_route(route: str) -> str:
    """Writes the regex patterns of DRF routers in the `path()` style: `^coupons/(?P<pk>[^/.]+)/$`
    becomes `coupons/<pk>/`."""
    out, i = [], 0
    while i < len(route):
        if route.startswith("(?P<", i):
            name_end = route.index(">", i)
            out.append(f"<{route[i + 4 : name_end]}>")
            i = _group_end(route, i)
            continue
        if route[i] not in "^$":
            out.append(route[i])
        i += 1
    return "".join(out)


def _group_end(pattern: str, start: int) -> int:
    """The index just past the group opened at `start`, skipping escaped and bracketed parentheses."""
    depth, i, in_class = 0, start, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(pattern)


# ---------------------------------------------------------------- logging


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (None outside a request or task) to every record of its handler.

    Django logs a 4xx/5xx response ("Bad Request: /path") once the middleware chain has returned and
    the context is reset, so the id is then read from the `request` it passes along.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = current_request_id.get()
            if request_id is None:
                request_id = getattr(getattr(record, "request", None), "request_id", None)
            record.request_id = request_id
        return True


class JsonFormatter(BaseJsonFormatter):
    """One JSON object per line: timestamp, level, logger, message, request_id, exc_info and any extra.

    Django's `request` extra is left out (its repr carries the path, and so possibly a license key);
    every other string is masked like the message, a traceback included.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("fmt", ["levelname", "name", "message", "request_id"])
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", True)
        kwargs.setdefault("reserved_attrs", [*RESERVED_ATTRS, "taskName", "request"])
        super().__init__(*args, **kwargs)

    def process_log_record(self, log_data: dict) -> dict:
        return {key: mask_license_key(value) if isinstance(value, str) else value for key, value in log_data.items()}


# ---------------------------------------------------------------- Celery


_task_tokens: dict[str, Token] = {}


def task_publish_add_request_id(headers=None, **kwargs) -> None:
    """`before_task_publish`: the id of the request (or task) that sends the task goes with it."""
    request_id = current_request_id.get()
    if request_id and headers is not None:
        headers.setdefault(TASK_REQUEST_ID_HEADER, request_id)


def task_prerun_set_request_id(task_id=None, task=None, **kwargs) -> None:
    """`task_prerun`: the id from the message headers, else (an eager task) the caller's own."""
    request_id = _request_id_of(task) or current_request_id.get()
    if task_id:
        _task_tokens[task_id] = current_request_id.set(request_id)


def task_postrun_clear_request_id(task_id=None, **kwargs) -> None:
    """`task_postrun`: back to what was there before the task (the request's id for an eager task)."""
    token = _task_tokens.pop(task_id, None)
    if token is None:
        return
    try:
        current_request_id.reset(token)
    except ValueError:  # set in another context: nothing of the task's must outlive it
        current_request_id.set(None)


def _request_id_of(task) -> str | None:
    request = getattr(task, "request", None)
    if request is None:
        return None
    # On a worker, message headers become attributes of the request; eager calls keep them in `headers`.
    value = getattr(request, TASK_REQUEST_ID_HEADER, None) or (getattr(request, "headers", None) or {}).get(
        TASK_REQUEST_ID_HEADER
    )
    return value if isinstance(value, str) and _SANE_REQUEST_ID.fullmatch(value) else None


def connect_celery_signals() -> None:
    from celery.signals import before_task_publish, task_postrun, task_prerun

    before_task_publish.connect(task_publish_add_request_id, dispatch_uid="observability-publish", weak=False)
    task_prerun.connect(task_prerun_set_request_id, dispatch_uid="observability-prerun", weak=False)
    task_postrun.connect(task_postrun_clear_request_id, dispatch_uid="observability-postrun", weak=False)
