"""The README's reverse proxy in front of gunicorn: deploy/nginx-billing.conf, run by nginx against
the app in gunicorn with a single sync worker. A client trickling its body one byte at a time holds
that worker when it talks to gunicorn directly, and holds nothing through nginx. Needs nginx
(Debian's package; CI installs it) and skips, saying so, without it."""

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
EXAMPLE = BASE_DIR / "deploy" / "nginx-billing.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TRICKLE_SECONDS = 1.5
BODY = b'{"email": "slow@example.com", "password": "x"}'

pytestmark = pytest.mark.skipif(not os.path.exists(NGINX), reason="needs nginx (apt-get install nginx)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {seconds} s")


def stop(process: subprocess.Popen, sig=signal.SIGTERM) -> None:
    process.send_signal(sig)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def gunicorn_port(tmp_path):
    """The app in gunicorn with its production config and one sync worker (no database needed here)."""
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(DEBUG="true", PORT=str(port), WEB_CONCURRENCY="1", GUNICORN_TIMEOUT="60")
    log = (tmp_path / "gunicorn.log").open("w")
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "billing_project.wsgi:application"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        stop(gunicorn, signal.SIGINT)
        log.close()


@pytest.fixture
def nginx_port(tmp_path, gunicorn_port):
    """nginx running the README's example server block, pointed at the test's gunicorn."""
    port = free_port()
    server = EXAMPLE.read_text()
    server = re.sub(r"listen 80;", f"listen 127.0.0.1:{port};", server)
    server = re.sub(r"server 127\.0\.0\.1:8000;", f"server 127.0.0.1:{gunicorn_port};", server)
    server = re.sub(r"access_log \S+", f"access_log {tmp_path / 'access.log'}", server)
    (tmp_path / "billing.conf").write_text(server)
    temp_directives = (
        "client_body_temp_path",
        "proxy_temp_path",
        "fastcgi_temp_path",
        "uwsgi_temp_path",
        "scgi_temp_path",
    )
    temp_paths = "".join(f"    {directive} {tmp_path / directive};\n" for directive in temp_directives)
    (tmp_path / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")  # root's workers would run as nobody, locked out of tmp_path
        + f"worker_processes 1;\ndaemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log warn;\n"
        + "events { worker_connections 64; }\n"
        + f"http {{\n    access_log off;\n{temp_paths}    include {tmp_path}/billing.conf;\n}}\n"
    )
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        stop(nginx, signal.SIGQUIT)


class Trickle:
    """A client that sends a POST's headers, then its body one byte every TRICKLE_SECONDS."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(
            b"POST /api/v1/auth/token/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        )
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self):
        for byte in BODY:
            if self.stopped.wait(TRICKLE_SECONDS):
                return
            try:
                self.sock.sendall(bytes([byte]))
            except OSError:
                return

    def close(self):
        self.stopped.set()
        self.thread.join(timeout=5)
        self.sock.close()


def health_status(port: int, timeout: float) -> int:
    """The status GET /health answers; raises TimeoutError when no answer comes within `timeout`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_trickling_client_holds_the_only_sync_worker_when_it_talks_to_gunicorn(gunicorn_port):
    trickle = Trickle(gunicorn_port)
    try:
        time.sleep(TRICKLE_SECONDS + 0.5)  # the worker has the request and waits for its body

        with pytest.raises(TimeoutError):
            health_status(gunicorn_port, timeout=3)
    finally:
        trickle.close()


def test_through_the_example_proxy_a_trickling_client_holds_no_worker(nginx_port):
    trickle = Trickle(nginx_port)
    try:
        time.sleep(TRICKLE_SECONDS + 0.5)

        assert health_status(nginx_port, timeout=3) == 200  # the worker is free: no TimeoutError
    finally:
        trickle.close()


def test_the_example_proxy_refuses_a_huge_body_with_a_413_problem(nginx_port):
    connection = http.client.HTTPConnection("127.0.0.1", nginx_port, timeout=10)
    try:
        connection.request(
            "POST", "/api/v1/auth/token/", body=b"x" * (4 * 1024 * 1024), headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()

    assert response.status == 413
    assert response.getheader("Content-Type") == "application/problem+json"
    assert b'"code": "request_too_large"' in body


def test_the_example_proxy_logs_a_license_key_with_only_its_last_group(nginx_port, tmp_path):
    connection = http.client.HTTPConnection("127.0.0.1", nginx_port, timeout=10)
    try:
        connection.request("GET", "/api/v1/licenses/REPHLO-AB12-CD34-EF56-GH78/eligibility/?x=1")
        connection.getresponse().read()
        connection.request("GET", "/health")
        connection.getresponse().read()
    finally:
        connection.close()

    deadline = time.monotonic() + 5
    while "/health" not in (log := (tmp_path / "access.log").read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "GET /api/v1/licenses/REPHLO-****-****-****-GH78/eligibility/?x=1 HTTP/1.1" in log
    assert "AB12" not in log and "CD34" not in log and "EF56" not in log
    assert "GET /health HTTP/1.1" in log
