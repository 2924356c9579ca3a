"""What the benchmarks share: a scratch PostgreSQL database and gunicorn started on it with the
production configuration. Imported by the scripts next to it (`python bench/usage.py`)."""

import os
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def create_database(base_url: str, prefix: str) -> tuple[str, str]:
    """A new database next to `base_url`; returns its name and URL."""
    import psycopg

    name = f"{prefix}_{os.getpid()}"
    with psycopg.connect(base_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return name, base_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(base_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def port_check_free(port: int) -> None:
    """Another server on the port (a benchmark run at the same time) would answer the load instead."""
    import socket

    with socket.socket() as probe:
        if probe.connect_ex((HOST, port)) == 0:
            raise RuntimeError(f"{HOST}:{port} is in use: is another benchmark running?")


def start_server(environment: dict, *, workers: int, port: int) -> subprocess.Popen:
    """gunicorn with gunicorn.conf.py and BENCH_GUNICORN_ARGS, once /health answers."""
    port_check_free(port)
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "-c",
        str(ROOT / "gunicorn.conf.py"),
        "--workers",
        str(workers),
        "--bind",
        f"{HOST}:{port}",
        *os.environ.get("BENCH_GUNICORN_ARGS", "").split(),
        "--access-logfile",
        "/dev/null",
        "billing_project.wsgi:application",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=environment)
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("gunicorn did not come up")


class Sealer:
    """The audit chain's beat job (audit.tasks.seal_audit_chain) beside the server, as production runs
    it with AUDIT_SEAL_ON_WRITE off: a thread of this process sealing every `interval` seconds."""

    def __init__(self, interval: float = 5.0):
        import threading

        self.interval, self.sealed, self.runs = interval, 0, 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from django.db import connections

        from audit.services import audit_chain_seal

        while not self.stopping.wait(self.interval):
            self.sealed += audit_chain_seal().sealed
            self.runs += 1
        connections.close_all()

    def __enter__(self) -> "Sealer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join()

    def report(self) -> str:
        """What the sealer did under load, then the chain sealed to its end and verified."""
        from audit.models import AdminAuditLog
        from audit.selectors import audit_chain_verify
        from audit.services import audit_chain_seal

        during = f"sealed {self.sealed} rows in {self.runs} runs during the load"
        after = audit_chain_seal().sealed
        problem = audit_chain_verify()
        rows = AdminAuditLog.objects.count()
        return f"audit: {during}, {after} after it; {rows} rows, chain {'intact' if problem is None else problem}"
