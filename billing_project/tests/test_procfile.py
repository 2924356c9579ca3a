"""The Procfile as the README runs it: `honcho start` brings up web (gunicorn), worker and beat on
PostgreSQL and Redis, the instance becomes ready, a periodic job edited in the database schedule runs
and records its result, and SIGTERM stops every process it started.

The test makes its own database next to the suite's (and drops it), and uses REDIS_URL as the cache
and the broker."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

BASE_DIR = Path(settings.BASE_DIR)
BIN_DIR = Path(sys.executable).parent

# Makes the purge of idempotency keys run every second, as staff would in the console, and leaves
# one key past its 24 hours for it to purge.
SETUP = """
from datetime import timedelta
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from billing_project.models import IdempotencyKey

every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
job = PeriodicTask.objects.get(name="purge-idempotency-keys")
job.interval = every_second
job.save()
old = IdempotencyKey.objects.create(
    caller="user:1", path="/api/v1/x/", key="old", request_hash="0" * 64, status_code=200,
    content_type="application/json",
)
IdempotencyKey.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
"""

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL: Redis is the cache and the broker"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_connection(dbname: str):
    db = connection.settings_dict
    return psycopg.connect(
        dbname=dbname,
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or None,
        autocommit=True,
        connect_timeout=5,
    )


def _database_url(dbname: str) -> str:
    db = connection.settings_dict
    credentials = db["USER"] or ""
    if db["PASSWORD"]:
        credentials += f":{db['PASSWORD']}"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}{port}/{dbname}"


@pytest.fixture
def own_database():
    name = f"procfile_{uuid.uuid4().hex[:10]}"
    with _server_connection("postgres") as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with _server_connection("postgres") as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_until(check, *, seconds: float, what: str, log: Path):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            last = check()
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {seconds} s; last: {last!r}\n{log.read_text()[-6000:]}")


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = {int(child) for child in (task / "children").read_text().split()}
            todo += children - found
            found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_honcho_runs_web_worker_and_beat_a_periodic_job_runs_and_sigterm_stops_them_all(own_database, tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PROMETHEUS_MULTIPROC_DIR", "DJANGO_SETTINGS_MODULE", "PORT")
    }
    env.update(
        DATABASE_URL=_database_url(own_database),
        CELERY_BROKER_URL=os.environ["REDIS_URL"],
        DEBUG="true",
        WEB_CONCURRENCY="2",
        RUNTIME_DIR=str(tmp_path / "run"),
        PATH=f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    _manage(env, "migrate", "--noinput")
    assert "Added " in _manage(env, "seed_schedules")
    _manage(env, "shell", "-c", SETUP)
    port = _free_port()
    no_env_file = tmp_path / "empty.env"  # a developer's .env must not change what is tested
    no_env_file.write_text("")
    log = tmp_path / "honcho.log"
    with log.open("w") as output:
        honcho = subprocess.Popen(
            [str(BIN_DIR / "honcho"), "start", "-f", "Procfile", "-p", str(port), "-e", str(no_env_file)],
            cwd=BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            # the web process answers ready: database, cache, broker and migrations all ok
            status, body = _wait_until(
                lambda: _get_json(f"http://127.0.0.1:{port}/health/ready"),
                seconds=90,
                what="/health/ready",
                log=log,
            )
            assert (status, body["status"]) == (200, "ok"), body

            # beat sends the edited job, the worker runs it: the old key is gone and the run's result recorded
            with _server_connection(own_database) as db:

                def purged_and_recorded():
                    keys = db.execute("SELECT count(*) FROM billing_project_idempotencykey").fetchone()[0]
                    results = db.execute(
                        "SELECT result FROM django_celery_results_taskresult "
                        "WHERE periodic_task_name = 'purge-idempotency-keys' AND status = 'SUCCESS'"
                    ).fetchall()
                    return keys == 0 and ("1",) in results

                _wait_until(purged_and_recorded, seconds=90, what="the purge job's recorded run", log=log)
                last_run_at, runs = db.execute(
                    "SELECT last_run_at, total_run_count FROM django_celery_beat_periodictask "
                    "WHERE name = 'purge-idempotency-keys'"
                ).fetchone()
                assert last_run_at is not None and runs >= 1

            processes = _descendants(honcho.pid)
            assert len(processes) >= 5  # three process types, gunicorn's two workers, celery's pool
        finally:
            honcho.send_signal(signal.SIGTERM)
            try:
                honcho.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(honcho.pid, signal.SIGKILL)
                honcho.wait(timeout=10)

    # SIGTERM stopped everything it started, each process on its own (no SIGKILL needed)
    stopped_by = time.monotonic() + 10
    while any(_alive(pid) for pid in processes) and time.monotonic() < stopped_by:
        time.sleep(0.2)
    assert not [pid for pid in processes if _alive(pid)], log.read_text()[-6000:]
    assert "SIGKILL" not in log.read_text()
    assert not list(BASE_DIR.glob("celerybeat-schedule*"))
