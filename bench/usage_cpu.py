"""CPU time of usage recording in one process: the services themselves, no HTTP, on PostgreSQL.

    .venv/bin/python bench/usage_cpu.py [--rounds 400] [--batches 20] [--batch-size 500]

It creates a scratch database next to BENCH_DATABASE_URL (default: the local PostgreSQL), migrates and
seeds it (catalog, a few users with credits), then times `usage_record` (one event) and
`usage_record_batch` (events as `bench/usage.py` sends them). `process_time` counts this process's CPU
only, so it moves little with the machine's load, unlike the HTTP figures of `bench/usage.py`; the
wall time, the queries per call and the database server's CPU per call (a local server on Linux: /proc
of the connection's backend, as in `bench/webhooks_cpu.py`) are printed beside it. The scratch database
is dropped at the end.
"""

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import harness

ROOT = harness.ROOT


def event_body(user_id: int) -> dict:
    started = datetime.now(UTC) - timedelta(seconds=2)
    return {
        "request_id": str(uuid.uuid4()),
        "user_id": user_id,
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 2000,
        "request_type": "chat",
        "request_started_at": started.isoformat(),
        "request_completed_at": (started + timedelta(seconds=1)).isoformat(),
    }


def timed(call, rounds: int, backend_cpu) -> tuple[float, float, float, float]:
    """Median CPU ms, median wall ms and queries per call of `call()` over `rounds` calls, and the
    database backend's mean CPU ms per call (NaN when its process is not on this machine)."""
    from django.db import connection, reset_queries

    cpu, wall, queries = [], [], []
    backend_started = backend_cpu()
    for _ in range(rounds):
        reset_queries()
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        call()
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started_wall)
        queries.append(len(connection.queries))
    backend = (backend_cpu() - backend_started) / rounds
    return statistics.median(cpu) * 1000, statistics.median(wall) * 1000, statistics.median(queries), backend * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=400, help="Single events recorded (timed one by one).")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--users", type=int, default=5)
    arguments = parser.parse_args()

    with harness.scratch_database("bench_usage_cpu") as database_url:
        os.environ.update(
            DJANGO_SETTINGS_MODULE="billing_project.settings",
            DATABASE_URL=database_url,
            REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
            DEBUG="false",
            LOG_LEVEL="WARNING",
        )
        sys.path.insert(0, str(ROOT))
        harness.database_migrate_and_seed()
        from django.db import connection

        from credits.api.events import usage_event_parse
        from credits.services import credit_grant, usage_record, usage_record_batch
        from subscriptions.services import account_register

        users = []
        for index in range(arguments.users):
            user = account_register(email=f"cpu{index}@example.com", password=uuid.uuid4().hex)
            credit_grant(user=user, amount=500_000_000, source="bonus", reason="bench")
            users.append(user.pk)

        def one():
            usage_record(event=usage_event_parse(event_body(users[0]))[0])

        def batch():
            events = [
                usage_event_parse(event_body(users[index % len(users)]))[0] for index in range(arguments.batch_size)
            ]
            usage_record_batch(events=events)

        connection.force_debug_cursor = True  # counts queries with DEBUG off
        backend_cpu = harness.backend_cpu_reader(connection)
        timed(one, 50, backend_cpu)  # warm-up: the pricing book, the connection, the code paths
        single = timed(one, arguments.rounds, backend_cpu)
        batched = timed(batch, arguments.batches, backend_cpu)
        print(
            f"usage_record, one event: CPU {single[0]:.2f} ms, wall {single[1]:.2f} ms, {single[2]:.0f} queries, "
            f"database backend {single[3]:.2f} ms"
        )
        print(
            f"usage_record_batch, {arguments.batch_size} events ({arguments.users} users): "
            f"CPU {batched[0]:.1f} ms, wall {batched[1]:.1f} ms, {batched[2]:.0f} queries, "
            f"database backend {batched[3]:.1f} ms"
        )


if __name__ == "__main__":
    main()
