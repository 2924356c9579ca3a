"""The Redis cache behind its circuit breaker, against a real redis-server this module starts and stops."""

import gc
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from django.core.cache import caches
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from billing_project import cache_breaker
from conftest import access_token_for, bearer, run_concurrently

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
FAILURES, COOLDOWN = 3, 0.5

pytestmark = pytest.mark.skipif(not shutil.which(REDIS_SERVER), reason="needs the redis-server binary")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throwaway redis-server on a free port, without persistence: stop() is the outage, start() the recovery."""

    def __init__(self):
        self.port = free_port()
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=5)
            self.process = None


@pytest.fixture
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def redis_url(redis_server) -> str:
    return f"redis://127.0.0.1:{redis_server.port}/0"


def point_the_cache_at(settings, redis_server, **options):
    """The production cache settings pointed at the test's redis-server, with a small threshold and
    cool-down, and any further OPTIONS given."""
    settings.CACHE_BREAKER_FAILURES = FAILURES
    settings.CACHE_BREAKER_COOLDOWN_SECONDS = COOLDOWN
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "billing_project.cache_breaker.CircuitBreakerRedisCache",
            "LOCATION": redis_url(redis_server),
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1, "IGNORE_EXCEPTIONS": False, **options},
            "KEY_PREFIX": "test",
        },
    }
    cache_breaker.breakers_reset()


@pytest.fixture
def breaker_cache(settings, redis_server):
    point_the_cache_at(settings, redis_server)
    yield caches["default"]
    cache_breaker.breakers_reset()


def redis_errors() -> float:
    return REGISTRY.get_sample_value("redis_errors_total") or 0.0


def open_the_breaker(cache, redis_server):
    redis_server.stop()
    for _ in range(FAILURES):
        assert cache.get("anything", "miss") == "miss"
    assert cache.breaker.state == "open"


def test_breaker_stays_closed_while_redis_answers(breaker_cache):
    breaker_cache.set("greeting", "hello")

    assert breaker_cache.get("greeting") == "hello"
    assert breaker_cache.breaker.state == "closed"


def test_set_many_writes_every_value_with_its_expiry_in_one_command(breaker_cache):
    values = {"count": 7, "text": "hello", "entry": ("generation", {"balance": 10})}

    breaker_cache.set_many({"warm": 0}, timeout=60)  # the script is loaded on first use
    redis = breaker_cache.client.get_client(write=True)
    redis.config_resetstat()

    assert breaker_cache.set_many(values, timeout=60) == []

    commands = redis.info("commandstats")  # the script's own SETs are counted too
    assert commands["cmdstat_evalsha"]["calls"] == 1
    assert commands["cmdstat_set"]["calls"] == len(values)
    assert "cmdstat_multi" not in commands
    assert breaker_cache.get_many(list(values)) == values
    assert all(55_000 < breaker_cache.pttl(key) <= 60_000 for key in values)


def test_set_many_without_expiry_keeps_the_keys_and_an_expiry_already_past_deletes_them(breaker_cache):
    breaker_cache.set_many({"kept": 1, "gone": 2}, timeout=None)
    breaker_cache.set_many({"gone": 3}, timeout=0)

    assert breaker_cache.get_many(["kept", "gone"]) == {"kept": 1}
    assert breaker_cache.ttl("kept") is None


def test_set_many_still_writes_after_redis_forgot_its_scripts(breaker_cache):
    breaker_cache.set_many({"before": 1}, timeout=60)
    breaker_cache.client.get_client(write=True).script_flush()  # as after a restart

    breaker_cache.set_many({"after": 2}, timeout=60)

    assert breaker_cache.get_many(["before", "after"]) == {"before": 1, "after": 2}


def test_a_forked_child_talks_to_redis_on_a_connection_of_its_own_and_leaves_the_parents_open(breaker_cache):
    breaker_cache.set("parent", "before the fork")
    redis = breaker_cache.client.get_client(write=True)
    parent_connection = redis.client_id()
    read_end, write_end = os.pipe()

    child = os.fork()
    if child == 0:  # the child: no pytest teardown, only its report through the pipe
        try:
            breaker_cache.set("child", "written")
            report = f"{breaker_cache.client.get_client(write=True).client_id()} {breaker_cache.get('parent')}"
        except BaseException as error:  # reported to the parent, which fails the test
            report = f"error {error!r}"
        os.write(write_end, report.encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    child_connection, child_read = os.read(read_end, 1000).decode().split(" ", 1)
    os.close(read_end)

    assert int(child_connection) != parent_connection
    assert child_read == "before the fork"
    assert redis.client_id() == parent_connection  # still open after the child closed its copy
    assert breaker_cache.get("child") == "written"


def test_threads_that_come_and_go_give_their_connections_back_without_waiting_for_the_garbage_collector(
    settings, redis_server
):
    point_the_cache_at(settings, redis_server, CONNECTION_POOL_KWARGS={"max_connections": 2})
    written = []

    def write_and_read(number):
        cache = caches["default"]  # each thread builds its own cache object, with its own connection
        written.append((cache.set(f"thread-{number}", number), cache.get(f"thread-{number}")))

    gc.disable()  # a dead thread's cache object sits in a cycle: only the collector would free it
    try:
        for number in range(6):  # three times the pool's connections, one thread after the other
            thread = threading.Thread(target=write_and_read, args=(number,))
            thread.start()
            thread.join()
    finally:
        gc.enable()

    assert written == [(True, number) for number in range(6)]
    assert cache_breaker.breaker_for(redis_url(redis_server)).state == "closed"  # the threads' shared breaker
    cache_breaker.breakers_reset()


# A daemon thread stopped by the exit inside a call to the connection pool, holding its lock.
EXIT_WITH_THE_POOL_LOCKED = """
import threading, time, django
django.setup()
from django.core.cache import cache

cache.get("anything")
pool = cache.client.get_client().connection_pool
locked = threading.Event()

def stopped_inside_the_pool():
    with pool._lock:
        locked.set()
        time.sleep(60)

threading.Thread(target=stopped_inside_the_pool, daemon=True).start()
locked.wait()
"""


def test_a_process_exits_while_a_daemon_thread_holds_the_connection_pool(settings, redis_server):
    exited = subprocess.run(
        [sys.executable, "-c", EXIT_WITH_THE_POOL_LOCKED],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "billing_project.settings", "REDIS_URL": redis_url(redis_server)},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=20,  # a process that hangs on its way out fails the test here
        check=False,
    )

    assert exited.returncode == 0, exited.stderr


def test_breaker_opens_after_n_failures_and_counts_each_error(breaker_cache, redis_server):
    # given
    redis_server.stop()
    errors_before = redis_errors()

    # when: one failure short of the threshold, then the last one
    for _ in range(FAILURES - 1):
        assert breaker_cache.get("greeting", "miss") == "miss"
    assert breaker_cache.breaker.state == "closed"
    assert breaker_cache.set("greeting", "hello") is False

    # then
    assert breaker_cache.breaker.state == "open"
    assert redis_errors() == errors_before + FAILURES


def test_open_breaker_answers_misses_without_calling_redis(breaker_cache, redis_server):
    open_the_breaker(breaker_cache, redis_server)
    errors_before = redis_errors()
    started = time.perf_counter()

    # every operation the project uses answers at once, as a miss or a skipped write
    for _ in range(50):
        assert breaker_cache.get("k") is None
        assert breaker_cache.get("k", "default") == "default"
        assert breaker_cache.get_many(["k", "j"]) == {}
        assert breaker_cache.has_key("k") is False
        assert breaker_cache.set("k", 1) is False
        assert breaker_cache.add("k", 1) is False
        assert breaker_cache.set_many({"k": 1, "j": 2}) == ["k", "j"]
        assert breaker_cache.get_or_set("k", lambda: "computed") == "computed"
        breaker_cache.delete("k")
        breaker_cache.clear()
        with pytest.raises(ValueError):
            breaker_cache.incr("k")

    assert time.perf_counter() - started < 0.5
    assert redis_errors() == errors_before  # no call reached Redis
    assert breaker_cache.breaker.state == "open"


def test_breaker_half_opens_after_the_cooldown_and_closes_on_success(breaker_cache, redis_server):
    # given an open breaker and Redis back up
    open_the_breaker(breaker_cache, redis_server)
    redis_server.start()

    # while the cool-down runs, Redis is not called even though it would answer
    assert breaker_cache.set("greeting", "skipped") is False
    assert breaker_cache.breaker.state == "open"

    # when the cool-down is over, the next call is the trial
    time.sleep(COOLDOWN)
    assert breaker_cache.breaker.state == "half_open"
    assert breaker_cache.get("greeting") is None  # the write above never reached Redis

    # then the breaker is closed and the cache works again
    assert breaker_cache.breaker.state == "closed"
    breaker_cache.set("greeting", "hello")
    assert breaker_cache.get("greeting") == "hello"


def test_breaker_reopens_when_the_trial_fails(breaker_cache, redis_server):
    open_the_breaker(breaker_cache, redis_server)
    time.sleep(COOLDOWN)
    errors_before = redis_errors()

    assert breaker_cache.get("greeting", "miss") == "miss"  # the trial, against a Redis still down

    assert breaker_cache.breaker.state == "open"
    assert redis_errors() == errors_before + 1
    assert breaker_cache.get("greeting", "miss") == "miss"  # open again: not even tried
    assert redis_errors() == errors_before + 1


def test_breaker_only_lets_one_trial_through(breaker_cache):
    breaker = breaker_cache.breaker
    for _ in range(FAILURES):
        breaker.record("call", succeeded=False)
    time.sleep(COOLDOWN)

    assert breaker.admit() == "trial"
    assert breaker.admit() is None  # a second caller while the trial runs gets a miss
    breaker.record("trial", succeeded=True)
    assert breaker.admit() == "call"


def test_incr_on_a_missing_key_raises_and_does_not_count_as_a_redis_failure(breaker_cache):
    errors_before = redis_errors()

    for _ in range(FAILURES + 1):
        with pytest.raises(ValueError):
            breaker_cache.incr("no-such-key")

    assert breaker_cache.breaker.state == "closed"
    assert redis_errors() == errors_before


@pytest.mark.django_db
def test_me_endpoints_answer_from_the_database_while_redis_is_down(breaker_cache, redis_server, user_client):
    # given a warm cache, then the outage
    assert user_client.get("/api/v1/me/entitlements/").status_code == 200
    redis_server.stop()

    # when: enough requests to open the breaker, and more once it is open
    for _ in range(FAILURES + 2):
        credits = user_client.get("/api/v1/me/credits/")
        entitlements = user_client.get("/api/v1/me/entitlements/")

        # then
        assert credits.status_code == 200, credits.content
        assert credits.json()["balance"] == 0
        assert entitlements.status_code == 200, entitlements.content
        assert entitlements.json()["tier"] == "free"
    assert breaker_cache.breaker.state == "open"


@pytest.mark.django_db
def test_readiness_shows_the_breaker_closed_when_redis_answers(breaker_cache, client, settings):
    settings.CELERY_BROKER_URL = None

    response = client.get("/health/ready")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["checks"]["cache"]["ok"] is True
    assert response.json()["checks"]["cache"]["breaker"] == "closed"


@pytest.mark.django_db
def test_readiness_stays_200_degraded_while_the_breaker_is_open(breaker_cache, redis_server, client, settings):
    settings.CELERY_BROKER_URL = None
    open_the_breaker(breaker_cache, redis_server)

    response = client.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["cache"]["ok"] is False
    assert body["checks"]["cache"]["breaker"] == "open"
    assert "circuit breaker open" in body["checks"]["cache"]["detail"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_no_request_fails_when_redis_stops_in_the_middle_of_a_load(breaker_cache, redis_server, user):
    """Eight clients keep reading their balance and entitlements while Redis goes away under them."""
    token = access_token_for(user)
    redis_stopped = threading.Event()

    def client_loop(_):
        client = APIClient()
        client.credentials(**bearer(token))
        statuses = []
        for round_number in range(30):
            statuses.append(client.get("/api/v1/me/credits/").status_code)
            statuses.append(client.get("/api/v1/me/entitlements/").status_code)
            if round_number == 5:
                redis_stopped.wait(timeout=10)
        return statuses

    def stop_redis_once_loaded(_):
        time.sleep(0.2)
        redis_server.stop()
        redis_stopped.set()
        return []

    results = run_concurrently(lambda job: job(None), [client_loop] * 8 + [stop_redis_once_loaded])

    statuses = [status for result in results for status in result]
    assert not [result for result in results if isinstance(result, Exception)]
    assert len(statuses) == 8 * 60 and set(statuses) == {200}
    assert breaker_cache.breaker.state != "closed"
