"""/health, /health/ready and /metrics, against real dependencies: a failing one is a real closed port."""

import socket
from contextlib import contextmanager

import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from prometheus_client import Counter, values

CHECKS = {"database", "cache", "broker", "migrations"}


def closed_port() -> int:
    """A local port nothing listens on: the OS picks a free one, and we let it go again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def unreachable_default_database(tmp_path):
    """Puts a real connection to nowhere in place of connections["default"]: a closed port on PostgreSQL,
    a file in a missing directory on SQLite. The test's own connection, its transaction and SQLite's
    in-memory test database stay untouched, and come back afterwards."""
    real = connections[DEFAULT_DB_ALIAS]
    if real.vendor == "sqlite":
        unreachable = {"NAME": str(tmp_path / "missing" / "db.sqlite3")}
    else:
        unreachable = {"HOST": "127.0.0.1", "PORT": str(closed_port())}
    broken = type(real)({**real.settings_dict, **unreachable}, DEFAULT_DB_ALIAS)
    connections[DEFAULT_DB_ALIAS] = broken
    try:
        yield
    finally:
        broken.close()
        connections[DEFAULT_DB_ALIAS] = real


def test_liveness_answers_ok_without_touching_the_database(client):
    # No django_db mark: pytest-django fails any database access in this test.
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readiness_200_when_every_check_passes(client, settings):
    settings.CELERY_BROKER_URL = None

    response = client.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == CHECKS
    assert all(check["ok"] for check in body["checks"].values()), body
    assert body["checks"]["broker"]["detail"] == "eager (no broker)"
    assert body["checks"]["migrations"]["detail"] == "all applied"


@pytest.mark.django_db
def test_readiness_503_when_database_unreachable(client, tmp_path):
    with unreachable_default_database(tmp_path):
        response = client.get("/health/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is False
    assert "OperationalError" in body["checks"]["database"]["detail"]
    assert body["checks"]["migrations"]["ok"] is False
    assert body["checks"]["cache"]["ok"] is True
    # The test's own connection is back and works.
    assert connections[DEFAULT_DB_ALIAS].cursor().execute("SELECT 1").fetchone() == (1,)


@pytest.mark.django_db
def test_readiness_503_when_redis_cache_unreachable(client, settings):
    # The production cache settings, pointed at a port where no Redis listens.
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1, "IGNORE_EXCEPTIONS": True},
        },
    }

    response = client.get("/health/ready")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["cache"]["ok"] is False
    assert "RedisCache" in checks["cache"]["detail"]
    assert checks["database"]["ok"] is True


@pytest.mark.django_db
def test_readiness_503_when_broker_unreachable(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port()}/0"

    response = client.get("/health/ready")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["broker"]["ok"] is False
    assert "OperationalError" in checks["broker"]["detail"]
    assert checks["database"]["ok"] is True


@pytest.mark.django_db
def test_readiness_200_with_a_reachable_redis_broker(client, settings):
    if not settings.REDIS_URL:
        pytest.skip("needs a Redis server: set REDIS_URL to run it")
    settings.CELERY_BROKER_URL = settings.REDIS_URL

    response = client.get("/health/ready")

    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["broker"]["detail"] == "redis: connected"


def test_ops_endpoints_answer_get_only(client):
    assert client.post("/health").status_code == 405
    assert client.post("/health/ready").status_code == 405
    assert client.post("/metrics").status_code == 405


def test_metrics_exposes_prometheus_text(client, settings):
    settings.METRICS_TOKEN = ""

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE idempotent_hits_total counter" in response.content


def test_metrics_401_problem_without_the_right_token(client, settings):
    settings.METRICS_TOKEN = "metrics-scrape-token"

    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic metrics-scrape-token"}):
        response = client.get("/metrics", headers=headers)

        assert response.status_code == 401
        assert response["Content-Type"] == "application/problem+json"
        assert response["WWW-Authenticate"].startswith("Bearer")
        body = response.json()
        assert body["code"] == "not_authenticated"
        assert body["status"] == 401
        assert b"idempotent_hits_total" not in response.content


def test_metrics_200_with_the_token(client, settings):
    settings.METRICS_TOKEN = "metrics-scrape-token"

    response = client.get("/metrics", headers={"Authorization": "Bearer metrics-scrape-token"})

    assert response.status_code == 200
    assert b"idempotent_hits_total" in response.content


def test_metrics_sum_every_worker_in_multiprocess_mode(client, settings, monkeypatch, tmp_path):
    # given two gunicorn workers that each counted into PROMETHEUS_MULTIPROC_DIR
    settings.METRICS_TOKEN = ""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for worker_pid, count in ((1001, 2), (1002, 3)):
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda pid=worker_pid: pid))
        Counter("health_test_scrapes_total", "Written by one worker.", registry=None).inc(count)

    # when one of them answers the scrape
    try:
        response = client.get("/metrics")
    finally:
        values.close_all_multiprocess_files()

    # then it reports the sum, read from the directory rather than from its own memory
    assert response.status_code == 200
    assert b"health_test_scrapes_total 5.0" in response.content
    assert b"python_info" not in response.content
