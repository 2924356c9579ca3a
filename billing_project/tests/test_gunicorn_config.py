import gc
import json
import logging
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

# The app runs on its embedded defaults here: none of the suite's services, and no metrics folder.
NOT_INHERITED = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR", "RUNTIME_DIR")

KEY = "REPHLO-ABCD-EFGH-JKLM-NPQ7"


@pytest.mark.parametrize(
    "written",
    [
        KEY,
        KEY.replace("-", "%2D"),  # the hyphens escaped, as some HTTP clients send them
        "%52%45" + KEY[2:].replace("-", "%2d"),  # any character may be escaped, in either case of hex
        "%20" + KEY + "%20",  # blanks around the key, which the API strips
    ],
)
def test_the_access_log_of_a_worker_masks_license_keys_however_they_are_escaped(caplog, written):
    config = runpy.run_path(str(settings.BASE_DIR / "gunicorn.conf.py"))
    config["post_fork"](None, None)
    access_log = logging.getLogger("gunicorn.access")

    with caplog.at_level(logging.INFO, logger="gunicorn.access"):
        access_log.info(
            '%(h)s "%(r)s" %(s)s',
            {
                "h": "203.0.113.9",
                "r": f"GET /api/v1/licenses/{written}/eligibility/?version=1.2.0 HTTP/1.1",
                "s": "200",
            },
        )

    assert "ABCD" not in caplog.text
    assert "REPHLO-****-****-****-NPQ7" in caplog.text


def test_a_loaded_worker_freezes_what_it_loaded_and_collects_garbage_less_often():
    config = runpy.run_path(str(settings.BASE_DIR / "gunicorn.conf.py"))
    before = gc.get_threshold()
    try:
        config["post_worker_init"](None)

        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == config["GC_FIRST_GENERATION_THRESHOLD"] > before[0]
        assert gc.get_threshold()[1:] == before[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# Metrics under several workers, with no PROMETHEUS_MULTIPROC_DIR given


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return response.read().decode()


def _health_requests_counted(port: int) -> float:
    families = text_string_to_metric_families(_get(port, "/metrics"))
    return sum(
        sample.value
        for family in families
        if family.name == "http_requests"
        for sample in family.samples
        if sample.name == "http_requests_total" and sample.labels.get("route") == "health"
    )


def _worker_pids(master_pid: int) -> set[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return {int(pid) for pid in children}


def _wait_until(check, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)
    return result


def test_metrics_are_summed_over_all_workers_without_any_setting(tmp_path):
    # given: gunicorn with its configuration and two sync workers, PROMETHEUS_MULTIPROC_DIR unset
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}
    env.update(DEBUG="true", PORT=str(port), WEB_CONCURRENCY="2", GUNICORN_TIMEOUT="60", RUNTIME_DIR=str(tmp_path))
    log = (tmp_path / "gunicorn.log").open("w")
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "billing_project.wsgi:application"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until(lambda: len(_worker_pids(gunicorn.pid)) == 2)
        # when: one worker is held by a request whose headers have not all arrived, the other answers
        # five requests, then the first finishes its own: each worker has counted part of the six
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            time.sleep(0.5)  # taken by a worker, which now waits for the rest
            for _ in range(5):
                assert json.loads(_get(port, "/health")) == {"status": "ok"}
            slow.sendall(b"Connection: close\r\n\r\n")
            assert slow.recv(1024).startswith(b"HTTP/1.1 200")

        # then: every scrape, whichever worker answers it, counts all six
        assert [_health_requests_counted(port) for _ in range(6)] == [6.0] * 6

        # and a worker that dies keeps its counts in the sum
        killed = min(_worker_pids(gunicorn.pid))
        os.kill(killed, signal.SIGKILL)
        _wait_until(lambda: killed not in (pids := _worker_pids(gunicorn.pid)) and len(pids) == 2)
        assert [_health_requests_counted(port) for _ in range(4)] == [6.0] * 4
        folders = list(tmp_path.glob("metrics-*"))
        assert len(folders) == 1
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        gunicorn.wait(timeout=40)
        log.close()

    # the server's own metrics folder goes with it
    assert not list(tmp_path.glob("metrics-*")), (tmp_path / "gunicorn.log").read_text()
