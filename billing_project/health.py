"""Ops endpoints (SPEC 5, ops row): liveness, readiness with one check per dependency, Prometheus metrics.

Plain Django views, GET only, outside DRF: they must answer even when authentication, the API stack or
the database are what is broken.
"""

import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable

from django.conf import settings
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from billing_project.celery import app as celery_app
from billing_project.codes import ErrorCode
from billing_project.errors import problem_response

logger = logging.getLogger(__name__)

# A probe must answer within the orchestrator's timeout, so a silent broker costs one second at most.
BROKER_TIMEOUT_SECONDS = 1


class NotReady(Exception):
    """A dependency answered, but not as it should."""


@require_GET
def liveness(request):
    """The process serves requests. Touches no dependency, so a database outage never restarts the pods."""
    return JsonResponse({"status": "ok"})


@require_GET
def readiness(request):
    """Whether this instance can serve traffic: 200 when every check is ok, 503 with each check's detail.
    A cache behind a circuit breaker only degrades it: 200 with status "degraded" and the breaker's state."""
    database = run_check(check_database)
    if database["ok"]:
        migrations = run_check(check_migrations)
    else:
        # Reading the migration table of a database that is down would only wait for it a second time.
        migrations = {"ok": False, "detail": "not checked: the database is unavailable"}
    cache = run_check(check_cache)
    breaker = getattr(caches["default"], "breaker", None)
    if breaker is not None:
        cache["breaker"] = breaker.state
    checks = {"database": database, "cache": cache, "broker": run_check(check_broker), "migrations": migrations}
    # A cache behind a circuit breaker is not needed to serve: while it is open the API answers from the
    # database. Taking every instance out of rotation for a shared Redis outage would turn it into a full one.
    needed = {name: check for name, check in checks.items() if not (name == "cache" and breaker is not None)}
    ready = all(check["ok"] for check in needed.values())
    everything_ok = all(check["ok"] for check in checks.values())
    status = "ok" if everything_ok else "degraded" if ready else "unavailable"
    return JsonResponse({"status": status, "checks": checks}, status=200 if ready else 503)


def run_check(check: Callable[[], str]) -> dict:
    """Runs one check and times it. Whatever it raises makes the check not ok; the probe itself never fails."""
    started = time.perf_counter()
    try:
        ok, detail = True, check()
    except Exception as exc:
        logger.warning("readiness: %s failed: %s", check.__name__, exc)
        ok, detail = False, _describe(exc)
    return {"ok": ok, "detail": detail, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def _describe(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    text = message if isinstance(exc, NotReady) else f"{type(exc).__name__}: {message}"
    return text[:200]


def check_database() -> str:
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return f"{connection.vendor}: SELECT 1 ok"


def check_cache() -> str:
    cache = caches["default"]
    # A key of its own per probe: concurrent probes from other workers cannot overwrite it in between.
    key, value = f"health:ready:{secrets.token_hex(8)}", secrets.token_hex(8)
    cache.set(key, value, timeout=10)
    read_back = cache.get(key)
    cache.delete(key)
    breaker = getattr(cache, "breaker", None)
    if breaker is not None and breaker.state != "closed":
        raise NotReady(
            f"{type(cache).__name__}: circuit breaker {breaker.state}, Redis not called: answering from the database"
        )
    if read_back != value:
        raise NotReady(f"{type(cache).__name__}: the value just written was not read back")
    return f"{type(cache).__name__}: set and get ok"


def check_broker() -> str:
    if settings.CELERY_BROKER_URL is None:
        return "eager (no broker)"
    # connect_timeout bounds AMQP; the Redis transport reads its socket timeouts from transport_options.
    with celery_app.connection_for_write(
        settings.CELERY_BROKER_URL,
        connect_timeout=BROKER_TIMEOUT_SECONDS,
        transport_options={
            "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
            "socket_timeout": BROKER_TIMEOUT_SECONDS,
        },
    ) as connection:
        connection.ensure_connection(max_retries=0)
        return f"{connection.transport.driver_type}: connected"


def check_migrations() -> str:
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        pending = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _backwards in plan[:5])
        raise NotReady(f"{len(plan)} unapplied migration(s): {pending}")
    return "all applied"


@require_GET
def metrics(request):
    """Prometheus scrape endpoint; open unless METRICS_TOKEN is set, then it needs that bearer token."""
    token = getattr(settings, "METRICS_TOKEN", "")
    if token and not _bearer_matches(request, token):
        response = problem_response(
            request,
            status_code=401,
            code=ErrorCode.NOT_AUTHENTICATED,
            title="Authentication required",
            detail="/metrics needs the header Authorization: Bearer <METRICS_TOKEN>.",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    # The body is the classic text format, which prometheus_client labels as version 0.0.4.
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def _bearer_matches(request, token: str) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    # Constant-time comparison: the response time must not reveal how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


def _registry():
    """Under several gunicorn workers each process writes its samples to PROMETHEUS_MULTIPROC_DIR;
    the scrape sums them all, whichever worker answers it."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
