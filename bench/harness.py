"""What the benchmarks share: a scratch PostgreSQL database and gunicorn started on it with the
production configuration. Imported by the scripts next to it (`python bench/usage.py`)."""

import contextlib
import math
import os
import secrets
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
BASE_DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def server_environment(database_url: str, *, port: int, redis_database: int) -> dict:
    """The production settings (DEBUG off) on the scratch database, with fresh secrets."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "billing_project.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", f"redis://127.0.0.1:6379/{redis_database}"),
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "JWT_SECRET": secrets.token_urlsafe(48),
        "SERVICE_JWT_SECRET": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }


def database_migrate_and_seed() -> None:
    """Django set up in this process on DATABASE_URL, migrated, the catalog seeded, the cache empty."""
    import django

    django.setup()
    from django.core.cache import cache
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("seed_catalog", verbosity=0)
    cache.clear()


@contextlib.contextmanager
def scratch_database(prefix: str):
    """A new database next to BENCH_DATABASE_URL for the block (its URL), dropped after it with this
    process's connections to it closed."""
    name, database_url = create_database(BASE_DATABASE_URL, prefix)
    try:
        yield database_url
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(BASE_DATABASE_URL, name)


@contextlib.contextmanager
def serving(environment: dict, *, workers: int, port: int, options: list[str] | None = None):
    """gunicorn (start_server) for the block, stopped after it. This process's connections are closed
    first, so none of the seeding's holds a lock or a slot meanwhile."""
    from django.db import connections

    connections.close_all()
    server = start_server(environment, workers=workers, port=port, options=options)
    try:
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)


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


def table_updates(database_url: str) -> dict[str, tuple[int, int]]:
    """Each table's row updates and HOT updates so far, as the statistics of ended connections hold
    them: after a second, the time a just-closed connection's backend takes to write them as it exits."""
    import psycopg

    time.sleep(1)
    with psycopg.connect(database_url, autocommit=True) as connection:
        rows = connection.execute("SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables").fetchall()
    return {table: (updates, hot) for table, updates, hot in rows}


def hot_updates_print(database_url: str, before: dict[str, tuple[int, int]]) -> None:
    """For each table updated since `before` (table_updates), how many of its row updates PostgreSQL
    made in place (HOT: no index entry written, nothing left for vacuum in the indexes)."""
    for table, (updates, hot) in sorted(table_updates(database_url).items()):
        updates_earlier, hot_earlier = before.get(table, (0, 0))
        if updates > updates_earlier:
            print(f"{table}: {hot - hot_earlier} of {updates - updates_earlier} updates in place (HOT)")


def p99(values: list[float]) -> float:
    """The 99th percentile of `values`, the value at that rank of their sorted order (the figure every
    benchmark here prints beside its median)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def backend_cpu_reader(connection):
    """A function giving the CPU seconds the connection's server process has used, or NaN when that
    process is not on this machine."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return lambda: math.nan

    def used() -> float:
        # utime and stime: fields 14 and 15, counted after the command name's closing parenthesis.
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return used


def port_check_free(port: int) -> None:
    """Another server on the port (a benchmark run at the same time) would answer the load instead."""
    import socket

    with socket.socket() as probe:
        if probe.connect_ex((HOST, port)) == 0:
            raise RuntimeError(f"{HOST}:{port} is in use: is another benchmark running?")


def start_server(environment: dict, *, workers: int, port: int, options: list[str] | None = None) -> subprocess.Popen:
    """gunicorn with gunicorn.conf.py and `options` (default: BENCH_GUNICORN_ARGS), once /health answers."""
    port_check_free(port)
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "-c",
        str(ROOT / "gunicorn.conf.py"),
        "--workers",
        str(workers),
        "--bind",
        f"{HOST}:{port}",
        *(os.environ.get("BENCH_GUNICORN_ARGS", "").split() if options is None else options),
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


class _BesideTheLoad:
    """A thread of this process running the subclass's `_run` from the start of the block until its
    end, when `stopping` is set."""

    def __init__(self):
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join()


class SessionWaits(_BesideTheLoad):
    """How the sessions of one database spent a run: pg_stat_activity sampled every `interval` seconds
    by a connection of its own, while the block runs. `summary()` gives the mean number of sessions
    running a statement, waiting for a row or transaction lock, waiting on the WAL (its flush at
    commit, mostly), waiting on anything else, and idle in a transaction while their client (the
    worker) works. Its polls cost about 1 % of the machine at 20 ms (this thread, and the server
    process answering them, which a CPU split counts as postgres)."""

    STATES = ("running", "lock", "wal", "other", "client in transaction")

    def __init__(self, database_url: str, interval: float = 0.02):
        super().__init__()
        self.database_url, self.interval = database_url, interval
        self.counts = dict.fromkeys(self.STATES, 0)
        self.samples = 0

    @staticmethod
    def state_of(state: str, wait_type: str | None, wait: str | None) -> str | None:
        if state == "idle in transaction":
            return "client in transaction"
        if state != "active":
            return None
        if wait_type is None:
            return "running"
        if wait_type == "Lock":
            return "lock"
        return "wal" if wait.startswith("WAL") else "other"

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as connection:
            query = connection.cursor()
            while not self.stopping.wait(self.interval):
                query.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"
                )
                for row in query.fetchall():
                    if (state := self.state_of(*row)) is not None:
                        self.counts[state] += 1
                self.samples += 1

    def summary(self) -> str:
        if not self.samples:
            return ""
        return ", ".join(f"{state} {count / self.samples:.2f}" for state, count in self.counts.items())


class Sealer(_BesideTheLoad):
    """The audit chain's beat job (audit.tasks.seal_audit_chain) beside the server, as production runs
    it with AUDIT_SEAL_ON_WRITE off: a thread of this process sealing every `interval` seconds."""

    def __init__(self, interval: float = 5.0):
        super().__init__()
        self.interval, self.sealed, self.runs = interval, 0, 0

    def _run(self) -> None:
        from django.db import connections

        from audit.services import audit_chain_seal

        while not self.stopping.wait(self.interval):
            self.sealed += audit_chain_seal().sealed
            self.runs += 1
        connections.close_all()

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
