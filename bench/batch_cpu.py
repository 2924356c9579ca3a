"""CPU per event of `POST usage/record-batch/` in one process, through Django's WSGI handler, on PostgreSQL.

    .venv/bin/python bench/batch_cpu.py [--users 1000] [--span 1000] [--size 100] [--batches 200]
                                        [--processes 1] [--profile 40] [--sort tottime] [--table-stats]
                                        [--singles]

It creates a scratch database next to BENCH_DATABASE_URL (default: the local PostgreSQL), migrates and
seeds it as `bench/usage.py` does (--users funded users), then posts batches shaped as the shared
reference's `proj_batch.lua` makes them (--size events, each for a random one of the first --span
users, random token counts) to the handler with the environ a server would pass, the garbage
collector set as gunicorn.conf.py sets it in a worker. It prints the median CPU per event of this
process (`process_time`) and the mean of its database backend (/proc, a local server on Linux), so
it moves little with the machine's load, unlike the figures of `bench/ratios.py`.

`--processes 2` forks after the set-up: each process posts its own batches over the same users at
the same time, so their groups meet each other's balance locks as two workers' do; each prints its
figures. `--profile N` prints the N heaviest functions (cProfile) of the first process, whose CPU
figure then includes the profiler's own. `--table-stats` prints, for each table the timed batches
updated, how many row updates PostgreSQL made in place (HOT, no index entry written) out of all.

`--singles` forks one more process that, while the batches are posted, posts one-event batches (what
`usage/record` records) for random ones of the same users, one after the other, and prints their
wall time (median, 99th percentile): how long a single record waits behind the batches' groups,
which hold their users' balances until they commit.
"""

import argparse
import cProfile
import gc
import io
import json
import multiprocessing
import os
import pstats
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import harness
import usage

ROOT = harness.ROOT
PATH = "/api/v1/usage/record-batch/"


def batch_body(user_ids: list[int], size: int) -> bytes:
    now = datetime.now(UTC)
    started = (now - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    completed = (now - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    events = [
        {
            "request_id": str(uuid.uuid4()),
            "user_id": random.choice(user_ids),
            "provider": "openai",
            "model": "gpt-4o",
            "input_tokens": random.randint(10, 4000),
            "output_tokens": random.randint(1, 2000),
            "request_type": "chat",
            "request_started_at": started,
            "request_completed_at": completed,
        }
        for _ in range(size)
    ]
    return json.dumps({"events": events}).encode()


def environ(body: bytes, token: str) -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": PATH,
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "SERVER_NAME": harness.HOST,
        "SERVER_PORT": str(usage.PORT),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": f"{harness.HOST}:{usage.PORT}",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "REMOTE_ADDR": harness.HOST,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def singles_post(post, user_ids: list[int], batches_done) -> None:
    """Posts one-event batches until the first process's batches are done; prints their wall times."""
    random.seed()
    walls = []
    while not batches_done.is_set():
        body = batch_body(user_ids, 1)
        started = time.perf_counter()
        post(body)
        walls.append(time.perf_counter() - started)
    if not walls:
        return
    print(
        f"single records meanwhile, process {os.getpid()}: {len(walls)}, wall median "
        f"{statistics.median(walls) * 1e3:.1f} ms, 99th percentile {harness.p99(walls) * 1e3:.1f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000, help="Funded users seeded.")
    parser.add_argument("--span", type=int, default=1000, help="Events go to random ones of the first N users.")
    parser.add_argument("--size", type=int, default=100, help="Events per batch.")
    parser.add_argument("--batches", type=int, default=200, help="Batches timed (per process).")
    parser.add_argument("--processes", type=int, default=1, help="Processes posting at the same time.")
    parser.add_argument("--profile", type=int, default=0, help="Print the N heaviest functions.")
    parser.add_argument("--sort", default="cumulative", help="The profile's order (cumulative, tottime...).")
    parser.add_argument("--callers", default="", help="With --profile: who calls the functions matching this.")
    parser.add_argument("--table-stats", action="store_true", help="Print each table's HOT updates of all.")
    parser.add_argument("--singles", action="store_true", help="Time single records posted meanwhile.")
    arguments = parser.parse_args()

    with harness.scratch_database("bench_batch_cpu") as database_url:
        os.environ.update(harness.server_environment(database_url, port=usage.PORT, redis_database=14))
        sys.path.insert(0, str(ROOT))
        data = usage.prepare(arguments.users)
        from django.core.handlers.wsgi import WSGIHandler
        from django.db import connection, connections

        handler = WSGIHandler()
        user_ids, token = data["user_ids"][: arguments.span], data["service_token"]

        def start_response(status, headers, exc_info=None):
            assert status.startswith("200"), status

        def post(body: bytes) -> None:
            response = handler(environ(body, token), start_response)
            b"".join(response)
            response.close()

        for _ in range(5):  # warm: imports, the pricing book, the connection
            post(batch_body(user_ids, arguments.size))
        gc.freeze()
        gc.set_threshold(50_000)  # as gunicorn.conf.py's post_worker_init
        connections.close_all()  # each process opens its own
        batches_done = multiprocessing.get_context("fork").Event()
        children = []
        if arguments.singles:
            if (pid := os.fork()) == 0:
                singles_post(post, user_ids, batches_done)
                connections.close_all()
                os._exit(0)
            children.append(pid)
        for _ in range(arguments.processes - 1):
            if (pid := os.fork()) == 0:
                children = None
                break
            children.append(pid)
        updates_before = harness.table_updates(database_url) if arguments.table_stats and children is not None else {}
        random.seed()
        bodies = [batch_body(user_ids, arguments.size) for _ in range(arguments.batches)]
        backend_cpu = harness.backend_cpu_reader(connection)
        profiler = cProfile.Profile(time.process_time) if arguments.profile and children is not None else None
        cpu = []
        backend_started = backend_cpu()
        for body in bodies:
            started = time.process_time()
            if profiler:
                profiler.enable()
            post(body)
            if profiler:
                profiler.disable()
            cpu.append(time.process_time() - started)
        backend_used = backend_cpu() - backend_started
        print(
            f"{arguments.size} events over {arguments.span} users, process {os.getpid()}: CPU per event "
            f"{statistics.median(cpu) / arguments.size * 1e6:.0f} µs (median of {len(cpu)} batches), "
            f"database backend {backend_used / len(cpu) / arguments.size * 1e6:.0f} µs (mean)",
            flush=True,
        )
        if children is None:
            connections.close_all()
            os._exit(0)
        batches_done.set()
        for pid in children:
            os.waitpid(pid, 0)
        if arguments.table_stats:
            connections.close_all()
            harness.hot_updates_print(database_url, updates_before)
        if profiler:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).sort_stats(arguments.sort)
            stats.print_stats(arguments.profile)
            if arguments.callers:
                stats.print_callers(arguments.callers)
            print(out.getvalue())


if __name__ == "__main__":
    main()
