"""Fault tolerance (SPEC 6): a PostgreSQL outage and a Celery worker killed mid-job.

The outage test starts a PostgreSQL server of its own (initdb into a temporary folder, a free port),
runs the app against it in gunicorn, stops and restarts the server under the running app. It needs
the PostgreSQL server binaries and skips, saying so, where they are not installed.

The killed-worker test runs `allocate_monthly_credits` (the body of the Celery task, which is acks_late
and retried) in a child process on the suite's PostgreSQL database, SIGKILLs it part-way, runs it again
as the redelivered task would, and proves every allocation was applied exactly once.
"""

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from credits.models import CreditAllocation, UserCreditBalance
from payments.models import WebhookEvent
from payments.tests.stripe_emulator import WEBHOOK_SECRET, event_payload, signature_header
from subscriptions.models import Subscription

BASE_DIR = Path(settings.BASE_DIR)
# A request during an outage must fail fast: connection refused at once, connect_timeout=2 at worst.
FAIL_FAST_SECONDS = 5
RECOVERY_SECONDS = 20
# Settings the app under test must not inherit from the suite's environment: it has its own database,
# a local-memory cache and eager tasks, so nothing but its PostgreSQL server is up or down.
NOT_INHERITED = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR")


# PostgreSQL server of the test's own


def _postgres_bin_dir() -> Path | None:
    candidates = []
    pg_ctl = shutil.which("pg_ctl") or "/usr/local/bin/pg_ctl"
    if os.path.exists(pg_ctl):
        candidates.append(Path(os.path.realpath(pg_ctl)).parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TempPostgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:`port`, trust authentication, user `postgres`.
    PostgreSQL refuses to run as root: under root it runs as the `postgres` system user."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.owner = None
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no `postgres` user to run a PostgreSQL server as")
            self.owner = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self.folder = Path(tempfile.mkdtemp(prefix="pgft-"))  # short: the socket path must fit 107 bytes
        if self.owner:
            os.chown(self.folder, self.owner["user"], self.owner["group"])
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = _free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        result = subprocess.run(
            command, cwd=self.folder, capture_output=True, text=True, timeout=timeout, **(self.owner or {})
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}\n{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):  # already stopped
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def scalar(self, sql: str, *params):
        import psycopg

        with psycopg.connect(self.url.replace("postgres://", "postgresql://"), connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchone()[0]


def _app_env(database_url: str, **extra: str) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="billing_project.settings",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def _manage(env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


# HTTP against the app under test


class Answer:
    def __init__(self, status: int, headers, body: bytes, seconds: float):
        self.status, self.headers, self.seconds = status, headers, seconds
        self.content_type = headers.get("Content-Type", "")
        try:
            self.data = json.loads(body) if body else None
        except ValueError:
            self.data = body.decode(errors="replace")

    def __repr__(self):
        return f"<{self.status} in {self.seconds:.2f}s: {self.data!r}>"


def _call(base: str, method: str, path: str, body: dict | None = None, *, token=None, headers=None) -> Answer:
    request = urllib.request.Request(
        base + path, method=method, data=json.dumps(body).encode() if body is not None else None
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Answer(response.status, response.headers, response.read(), time.monotonic() - started)
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read(), time.monotonic() - started)


def _wait_until(check, *, seconds: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as error:  # the server is not listening yet
            last = error
        time.sleep(interval)
    raise AssertionError(f"{what} not within {seconds} s; last: {last!r}")


@pytest.fixture
def postgres_server():
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: the outage test needs its own server")
    server = TempPostgres(bin_dir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def app_on_postgres(postgres_server, tmp_path):
    """The app in gunicorn (production config, one sync worker: one persistent connection) on the server."""
    env = _app_env(
        postgres_server.url,
        DB_CONNECT_TIMEOUT="2",
        DEBUG="true",
        THROTTLE_AUTH="1000/min",
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    _manage(env, "migrate", "--noinput")
    _manage(env, "seed_catalog")
    port = _free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "-w", "1"]
        + ["billing_project.wsgi:application"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: _call(base, "GET", "/health").status == 200, seconds=30, what="gunicorn answering")
        yield base
    finally:
        gunicorn.send_signal(signal.SIGINT)  # quick shutdown: no graceful wait for the worker
        try:
            gunicorn.wait(timeout=10)
        except subprocess.TimeoutExpired:
            gunicorn.kill()
            gunicorn.wait(timeout=10)
        log.close()


def _assert_database_unavailable(answer: Answer):
    assert answer.status == 503, answer
    assert answer.content_type.startswith("application/problem+json"), answer.content_type
    assert answer.data["code"] == "database_unavailable", answer
    assert answer.seconds < FAIL_FAST_SECONDS, answer


def _stripe_delivery(base: str, event: dict) -> Answer:
    """`event` posted as Stripe does: its JSON body (as `_call` writes it) and the signature of that body."""
    return _call(
        base,
        "POST",
        "/api/v1/billing/webhooks/stripe/",
        event,
        headers={"Stripe-Signature": signature_header(json.dumps(event))},
    )


def test_database_outage_answers_503_fast_writes_nothing_and_recovers_without_restart(postgres_server, app_on_postgres):
    base = app_on_postgres
    password = "correct horse battery staple"

    # given: the app serves a registered user
    alice = {"email": "alice@example.com", "password": password}
    assert _call(base, "POST", "/api/v1/auth/register/", alice).status == 201
    token = _call(base, "POST", "/api/v1/auth/token/", alice)
    assert token.status == 200, token
    access = token.data["access"]
    me = _call(base, "GET", "/api/v1/me/", token=access)
    assert me.status == 200 and me.data["email"] == "alice@example.com", me
    assert _call(base, "GET", "/health/ready").status == 200

    # when: PostgreSQL goes away under the running app
    postgres_server.stop()

    # then: every request that needs it fails fast with a 503 problem; liveness does not need it
    _assert_database_unavailable(_call(base, "GET", "/api/v1/me/", token=access))
    _assert_database_unavailable(_call(base, "GET", "/api/v1/me/credits/", token=access))
    _assert_database_unavailable(_call(base, "POST", "/api/v1/auth/token/", alice))
    _assert_database_unavailable(
        _call(base, "POST", "/api/v1/auth/register/", {"email": "bob@example.com", "password": password})
    )
    _assert_database_unavailable(
        _call(
            base,
            "POST",
            "/api/v1/subscriptions/",
            {"tier": "pro"},
            token=access,
            headers={"Idempotency-Key": "during-the-outage"},
        )
    )
    stripe_event = json.loads(
        event_payload("customer.created", {"id": "cus_QhOutage01", "object": "customer"}, event_id="evt_outage_1")
    )
    refused = _stripe_delivery(base, stripe_event)
    _assert_database_unavailable(refused)
    # Stripe delivers the event again after the pause the problem asks for.
    assert refused.headers.get("Retry-After") == "5", refused.headers
    assert refused.data["instance"] == "/api/v1/billing/webhooks/stripe/", refused
    live = _call(base, "GET", "/health")
    assert live.status == 200 and live.seconds < FAIL_FAST_SECONDS, live
    ready = _call(base, "GET", "/health/ready")
    assert ready.status == 503 and ready.seconds < FAIL_FAST_SECONDS, ready
    assert ready.data["checks"]["database"]["ok"] is False, ready

    # when: it comes back; the app process is the same one
    postgres_server.start()

    # then: the app serves again within seconds, without a restart
    me = _wait_until(
        lambda: (answer := _call(base, "GET", "/api/v1/me/", token=access)).status == 200 and answer,
        seconds=RECOVERY_SECONDS,
        what="GET /api/v1/me/ answering 200 after PostgreSQL returned",
    )
    assert me.data["email"] == "alice@example.com"
    assert _call(base, "POST", "/api/v1/auth/token/", alice).status == 200
    assert _call(base, "GET", "/health/ready").status == 200

    # and nothing of the writes tried during the outage exists, not even in part
    assert postgres_server.scalar("SELECT count(*) FROM auth_user WHERE email = %s", "bob@example.com") == 0
    assert postgres_server.scalar("SELECT count(*) FROM auth_user") == 1
    assert postgres_server.scalar("SELECT count(*) FROM subscriptions_subscription") == 1
    assert postgres_server.scalar("SELECT count(*) FROM billing_project_idempotencykey") == 0
    webhook_events = f"SELECT count(*) FROM {WebhookEvent._meta.db_table}"
    assert postgres_server.scalar(webhook_events) == 0
    # and Stripe's next delivery of the refused event is stored and answered, once
    delivered = _stripe_delivery(base, stripe_event)
    assert delivered.status == 200 and delivered.data["event_id"] == "evt_outage_1", delivered
    assert postgres_server.scalar(webhook_events) == 1
    bob = _call(base, "POST", "/api/v1/auth/register/", {"email": "bob@example.com", "password": password})
    assert bob.status == 201, bob


# A worker killed in the middle of the monthly allocation


def _suite_database_url() -> str:
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"


def _allocated_once_each(subscriptions) -> None:
    """Every allocation present is whole: one per subscription at most, its user's balance equal to it."""
    allocations = CreditAllocation.objects.filter(subscription_id__in=subscriptions)
    per_subscription = allocations.values("subscription_id").annotate(n=Count("id"))
    assert all(row["n"] == 1 for row in per_subscription), list(per_subscription)
    allocated_users = set(allocations.values_list("user_id", flat=True))
    for balance in UserCreditBalance.objects.filter(user__subscriptions__in=subscriptions):
        expected = 1000 if balance.user_id in allocated_users else 0
        assert balance.amount == expected, (balance.user_id, balance.amount)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_allocation_killed_part_way_then_retried_allocates_each_subscription_exactly_once(django_user_model):
    # given: live subscriptions whose current credit period has no allocation yet
    count = 150  # about 30 ms each on a small machine: the poll below catches the run within its first few
    now = timezone.now()
    users = django_user_model.objects.bulk_create(
        [django_user_model(username=f"sub{n}@example.com", email=f"sub{n}@example.com") for n in range(count)]
    )
    subscriptions = Subscription.objects.bulk_create(
        [
            Subscription(
                user=user,
                tier="pro",
                status="active",
                base_price_usd="19.00",
                monthly_credit_allocation=1000,
                current_period_start=now - timedelta(days=1),
                current_period_end=now + timedelta(days=29),
            )
            for user in users
        ]
    )
    ids = [subscription.pk for subscription in subscriptions]
    env = _app_env(_suite_database_url())
    command = [sys.executable, "manage.py", "allocate_monthly_credits", "--no-progress"]

    # when: the worker dies (SIGKILL: no cleanup, no except clause runs) once allocations have started
    worker = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_until(
            lambda: worker.poll() is not None or CreditAllocation.objects.filter(subscription_id__in=ids).exists(),
            seconds=60,
            what="the first allocations",
            interval=0.01,
        )
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL, f"the run ended by itself before it was killed: {stderr.decode()}"
    done_when_killed = CreditAllocation.objects.filter(subscription_id__in=ids).count()
    assert 0 < done_when_killed < count, f"not killed part-way: {done_when_killed} of {count} allocated"
    _allocated_once_each(ids)  # what the killed run committed is whole; its open transaction rolled back

    # and: the task is redelivered (acks_late) and runs the same job to the end
    retry = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert retry.returncode == 0, retry.stderr

    # then: each subscription has exactly one allocation for its period, each balance exactly one allocation
    allocations = CreditAllocation.objects.filter(subscription_id__in=ids)
    assert allocations.count() == count
    assert allocations.values("subscription_id", "period_start").distinct().count() == count
    assert f"allocated: {count - done_when_killed}" in retry.stdout, retry.stdout
    _allocated_once_each(ids)
    assert sorted(UserCreditBalance.objects.filter(user__in=users).values_list("amount", flat=True)) == [1000] * count
    out = StringIO()
    call_command("verify_ledger", "--no-progress", stdout=out)
    assert "Ledger consistent" in out.getvalue(), out.getvalue()
