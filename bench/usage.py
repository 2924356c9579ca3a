"""Throughput and latency of usage recording and balance reads, under gunicorn on PostgreSQL.

    .venv/bin/python bench/usage.py [--duration 10] [--connections 16] [--workers N]

It creates a scratch database next to BENCH_DATABASE_URL (default: the local PostgreSQL), migrates
and seeds it (catalog, users with credits), starts gunicorn with the production configuration
(gunicorn.conf.py, DEBUG off), and loads it from a separate process over loopback with keep-alive
connections. It prints, for each phase: requests (or events) per second and p50/p99 latency.
The scratch database is dropped at the end. BENCH_PORT picks the port (8765), BENCH_GUNICORN_ARGS adds
gunicorn options (for example `--worker-class gthread --threads 4`).
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import harness

ROOT = harness.ROOT
HOST, PORT = "127.0.0.1", int(os.environ.get("BENCH_PORT", 8765))


def server_environment(database_url: str) -> dict:
    # No money moves here: the offline provider, named, as production requires.
    return {**harness.server_environment(database_url, port=PORT, redis_database=14), "PAYMENTS_PROVIDER": "offline"}


def prepare(users: int) -> dict:
    """Migrates and seeds the scratch database (in this process); returns what the load needs."""
    harness.database_migrate_and_seed()
    from django.contrib.auth import get_user_model
    from django.test import override_settings
    from rest_framework_simplejwt.tokens import RefreshToken

    from billing_project.service_tokens import service_token_issue
    from credits.services import credit_grant
    from subscriptions.services import account_register

    user_model = get_user_model()
    ids, tokens = [], []
    # Nobody signs in with these passwords (the load carries tokens): the fast hasher seeds 10,000
    # users in minutes instead of an hour of PBKDF2.
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        for index in range(users):
            # Hex shares at most a dozen characters with the address: never "too similar" to it.
            user = account_register(email=f"bench{index}@example.com", password=secrets.token_hex(16))
            credit_grant(user=user_model.objects.get(pk=user.pk), amount=500_000_000, source="bonus", reason="bench")
            ids.append(user.pk)
            tokens.append(str(RefreshToken.for_user(user).access_token))
    service = service_token_issue(service="bench", scopes=["usage:write"], lifetime=timedelta(hours=2)).token
    return {"user_ids": ids, "user_tokens": tokens, "service_token": service}


def event(user_id: int) -> dict:
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


def request_bytes(method: str, path: str, token: str, body: dict | None = None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def exchange(reader, writer, data: bytes) -> tuple[int, bool]:
    """Sends one request and reads its response; (status, whether the server closes the connection)."""
    writer.write(data)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("closed before answering")
    length, closes = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            closes = True
    await reader.readexactly(length)
    return int(status_line.split()[1]), closes


async def connection_loop(make_request, deadline: float, latencies: list, statuses: dict) -> None:
    """One client connection, kept alive while the server allows it (gunicorn's sync workers do not:
    they close after each response, so the loop reconnects, as a real client would)."""
    reader = writer = None
    while time.perf_counter() < deadline:
        data = make_request()
        started = time.perf_counter()
        if writer is None:
            reader, writer = await asyncio.open_connection(HOST, PORT)
        try:
            status, closes = await exchange(reader, writer, data)
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            reader = writer = None
            continue
        latencies.append(time.perf_counter() - started)
        statuses[status] = statuses.get(status, 0) + 1
        if closes:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def run_load(spec: dict, results) -> None:
    """The load generator, in its own process: `connections` keep-alive connections for `duration` s."""
    counter = iter(range(10**9))
    users, tokens = spec["user_ids"], spec["user_tokens"]

    def next_request():
        n = next(counter)
        if spec["phase"] == "record":
            return request_bytes("POST", "/api/v1/usage/record/", spec["service_token"], event(users[n % len(users)]))
        if spec["phase"] == "batch":
            chosen = [users[(n * 5 + offset) % len(users)] for offset in range(5)]
            events = [event(chosen[i % 5]) for i in range(spec["batch_size"])]
            return request_bytes("POST", "/api/v1/usage/record-batch/", spec["service_token"], {"events": events})
        return request_bytes("GET", "/api/v1/me/credits/", tokens[n % len(tokens)])

    async def main():
        latencies, statuses = [], {}
        warmup = time.perf_counter() + spec["warmup"]
        await asyncio.gather(*(connection_loop(next_request, warmup, [], {}) for _ in range(spec["connections"])))
        began = time.perf_counter()
        deadline = began + spec["duration"]
        await asyncio.gather(
            *(connection_loop(next_request, deadline, latencies, statuses) for _ in range(spec["connections"]))
        )
        return latencies, statuses, time.perf_counter() - began

    latencies, statuses, elapsed = asyncio.run(main())
    results.put({"latencies": latencies, "statuses": statuses, "elapsed": elapsed})


def measure(spec: dict) -> dict:
    results = multiprocessing.Queue()
    process = multiprocessing.Process(target=run_load, args=(spec, results))
    process.start()
    outcome = results.get()
    process.join()
    latencies = sorted(outcome["latencies"])
    count = len(latencies)
    return {
        "requests": count,
        "per_second": count / outcome["elapsed"],
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": harness.p99(latencies) * 1000,
        "statuses": outcome["statuses"],
    }


def run_phase(phase: str, data: dict, arguments) -> None:
    spec = {
        **data,
        "phase": phase,
        "connections": arguments.connections,
        "duration": arguments.duration,
        "warmup": arguments.warmup,
        "batch_size": arguments.batch_size,
    }
    figures = measure(spec)
    if phase == "batch":
        events = figures["per_second"] * arguments.batch_size
        print(
            f"record-batch ({arguments.batch_size}/batch): {events:,.0f} events/s "
            f"({figures['per_second']:.1f} batches/s, p50 {figures['p50_ms']:.0f} ms, "
            f"p99 {figures['p99_ms']:.0f} ms) statuses {figures['statuses']}"
        )
    else:
        label = "usage/record" if phase == "record" else "me/credits"
        print(
            f"{label}: {figures['per_second']:,.0f} requests/s, p50 {figures['p50_ms']:.1f} ms, "
            f"p99 {figures['p99_ms']:.1f} ms, statuses {figures['statuses']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of load per phase.")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--phases", default="record,batch,credits")
    arguments = parser.parse_args()

    with harness.scratch_database("bench_usage") as database_url:
        environment = server_environment(database_url)
        os.environ.update(environment)
        sys.path.insert(0, str(ROOT))
        data = prepare(arguments.users)
        with harness.serving(environment, workers=arguments.workers, port=PORT):
            print(
                f"gunicorn: {arguments.workers} sync workers; load: {arguments.connections} connections, "
                f"{arguments.duration:.0f} s per phase after {arguments.warmup:.0f} s warm-up"
            )
            for phase in arguments.phases.split(","):
                run_phase(phase, data, arguments)


if __name__ == "__main__":
    main()
