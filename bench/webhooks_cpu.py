"""CPU time and queries of one Stripe renewal webhook in one process, on PostgreSQL.

    .venv/bin/python bench/webhooks_cpu.py [--rounds 300] [--subscriptions 50] [--profile 30] [--replay]
                                           [--table-stats]

It creates a scratch database next to BENCH_DATABASE_URL (default: the local PostgreSQL), migrates and
seeds it as `bench/webhooks.py` does (users each with a Pro subscription billed by Stripe), then posts
signed `invoice.paid` renewals (billing_reason subscription_cycle) to the webhook endpoint by calling
Django's WSGI handler directly with the environ a server would pass (no test client), one by one, audit
sealing off as with a broker. `process_time` counts this
process's CPU only, so the figure moves little with the machine's load; the database server's CPU for
the same events is printed beside it when its process can be read here (a local server on Linux:
/proc of the connection's backend). Queries per event are exact. `--profile N` prints the N heaviest
functions (cProfile, cumulative) over the timed rounds, in CPU time. `--replay` times redeliveries of
events already processed (each renewal is posted once untimed, then again); otherwise the audit rows
the renewals wrote are then sealed (as the beat job would) and that is timed too. The scratch
database is dropped at the end. `--table-stats` prints, for each table the timed events updated, how
many row updates PostgreSQL made in place (HOT, no index entry written) out of all.
"""

import argparse
import cProfile
import io
import math
import os
import pstats
import secrets
import statistics
import sys
import time

import harness
import webhooks

ROOT = harness.ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300, help="Renewals posted (timed one by one).")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--subscriptions", type=int, default=50)
    parser.add_argument("--profile", type=int, default=0, help="Print the N heaviest functions.")
    parser.add_argument("--sort", default="cumulative", help="The profile's order (cumulative, tottime...).")
    parser.add_argument("--only", default="", help="Only the functions whose path matches this pattern.")
    parser.add_argument("--queries", action="store_true", help="Print the SQL of the last renewal.")
    parser.add_argument(
        "--replay", action="store_true", help="Time redeliveries of the renewals (each posted once before)."
    )
    parser.add_argument("--table-stats", action="store_true", help="Print each table's HOT updates of all.")
    arguments = parser.parse_args()

    webhook_secret = f"whsec_{secrets.token_hex(24)}"
    with harness.scratch_database("bench_webhooks_cpu") as database_url:
        environment = webhooks.server_environment(database_url, webhook_secret)
        environment["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
        os.environ.update(environment)
        sys.path.insert(0, str(ROOT))
        data = webhooks.prepare(arguments.subscriptions)
        from django.core.handlers.wsgi import WSGIHandler
        from django.db import connection

        handler = WSGIHandler()
        events = webhooks.Events(data["subscriptions"])

        def start_response(status, headers, exc_info=None):
            assert status.startswith("200"), status

        def post(payload: str) -> None:
            body = payload.encode()
            response = handler(
                {
                    "REQUEST_METHOD": "POST",
                    "PATH_INFO": webhooks.PATH,
                    "QUERY_STRING": "",
                    "CONTENT_TYPE": "application/json",
                    "CONTENT_LENGTH": str(len(body)),
                    "SERVER_NAME": webhooks.HOST,
                    "SERVER_PORT": str(webhooks.PORT),
                    "SERVER_PROTOCOL": "HTTP/1.1",
                    "HTTP_HOST": f"{webhooks.HOST}:{webhooks.PORT}",
                    "HTTP_STRIPE_SIGNATURE": webhooks.signature(payload, webhook_secret),
                    "REMOTE_ADDR": webhooks.HOST,
                    "wsgi.url_scheme": "http",
                    "wsgi.input": io.BytesIO(body),
                    "wsgi.errors": sys.stderr,
                    "wsgi.multithread": False,
                    "wsgi.multiprocess": True,
                    "wsgi.run_once": False,
                },
                start_response,
            )
            b"".join(response)
            response.close()

        # Statements counted (and kept, for --queries) by an execute wrapper: the debug cursor would
        # add its own rendering of every statement to the time measured.
        sent: list[str] = []

        def counted(execute, sql, params, many, context):
            sent.append(str(sql))
            return execute(sql, params, many, context)

        connection.execute_wrappers.append(counted)
        for _ in range(arguments.warmup):
            post(events.next_renewal())
        payloads = [events.next_renewal() for _ in range(arguments.rounds)]
        if arguments.replay:
            for payload in payloads:
                post(payload)
        if arguments.table_stats:
            connection.close()  # its statistics so far written, as its backend exits
            updates_before = harness.table_updates(database_url)
        backend_cpu = harness.backend_cpu_reader(connection)
        backend_started = backend_cpu()
        profiler = cProfile.Profile(time.process_time) if arguments.profile else None
        cpu, wall, queries = [], [], []
        for payload in payloads:
            sent.clear()
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            post(payload)
            if profiler:
                profiler.disable()
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started_wall)
            queries.append(len(sent))
        backend_used = backend_cpu() - backend_started
        if arguments.queries:
            for statement in sent:
                print(statement[:300])
        print(
            f"invoice.paid {'redelivery' if arguments.replay else 'renewal'}, {arguments.rounds} events: "
            f"CPU median {statistics.median(cpu) * 1000:.2f} ms "
            f"(tenth percentile {sorted(cpu)[len(cpu) // 10] * 1000:.2f}), "
            f"wall median {statistics.median(wall) * 1000:.2f} ms, "
            f"queries {statistics.median(queries):.0f} (min {min(queries)}, max {max(queries)})"
        )
        if not math.isnan(backend_used):
            print(f"database backend CPU per event {backend_used / len(payloads) * 1000:.2f} ms (mean)")
        if not arguments.replay:
            from audit.services import audit_chain_seal

            backend_started, started_cpu = backend_cpu(), time.process_time()
            sealed = audit_chain_seal().sealed
            per_row = (time.process_time() - started_cpu) / max(sealed, 1) * 1000
            backend_per_row = (backend_cpu() - backend_started) / max(sealed, 1) * 1000
            print(
                f"sealing the chain after them: {sealed} rows, CPU {per_row:.3f} ms per row "
                f"(database backend {backend_per_row:.3f} ms)"
            )
        if arguments.table_stats:
            connection.close()
            harness.hot_updates_print(database_url, updates_before)
        if profiler:
            if os.environ.get("PROFILE_OUT"):
                profiler.dump_stats(os.environ["PROFILE_OUT"])
            out = io.StringIO()
            restrictions = [arguments.only, arguments.profile] if arguments.only else [arguments.profile]
            pstats.Stats(profiler, stream=out).sort_stats(arguments.sort).print_stats(*restrictions)
            print(out.getvalue())


if __name__ == "__main__":
    main()
