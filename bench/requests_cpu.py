"""CPU time of the small requests (`/health`, `GET me/credits/`) in one process, on PostgreSQL.

    .venv/bin/python bench/requests_cpu.py [--rounds 3000] [--profile 30] [--sort tottime]

It creates a scratch database next to BENCH_DATABASE_URL (default: the local PostgreSQL), migrates and
seeds it as `bench/usage.py` does, then calls Django's WSGI handler directly (no test client, no
server) with the environ a server would pass, as the production settings run it. Requests are timed
in batches of 100 and the median batch is printed per request: `process_time` counts this process's
CPU only, so the figure moves little with the machine's load, and it is what a sync worker spends on
the request above the server's own work. `--profile N` prints the N heaviest functions (cProfile) of
each path. The scratch database is dropped at the end.
"""

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time

import harness
import usage

ROOT = harness.ROOT
BATCH = 100


def environ(path: str, token: str | None) -> dict:
    """What gunicorn passes for a GET without a body (the handler reads wsgi.input only for a body)."""
    built = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(usage.PORT),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": f"127.0.0.1:{usage.PORT}",
        "HTTP_USER_AGENT": "wrk",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if token:
        built["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3000, help="Requests timed per path.")
    parser.add_argument("--profile", type=int, default=0, help="Print the N heaviest functions of each path.")
    parser.add_argument("--sort", default="cumulative", help="The profile's order (cumulative, tottime...).")
    arguments = parser.parse_args()

    with harness.scratch_database("bench_requests_cpu") as database_url:
        os.environ.update(harness.server_environment(database_url, port=usage.PORT, redis_database=14))
        sys.path.insert(0, str(ROOT))
        data = usage.prepare(2)
        from django.core.handlers.wsgi import WSGIHandler

        handler = WSGIHandler()
        paths = {"/health": None, "/api/v1/me/credits/": data["user_tokens"][0]}

        def start_response(status, headers, exc_info=None):
            assert status.startswith("200"), status

        def call(path: str, token: str | None) -> None:
            response = handler(environ(path, token), start_response)
            b"".join(response)
            response.close()

        for path, token in paths.items():
            for _ in range(200):  # warm: imports, caches, connections
                call(path, token)
            profiler = cProfile.Profile(time.process_time) if arguments.profile else None
            batches = []
            for _ in range(max(arguments.rounds // BATCH, 1)):
                started = time.process_time()
                if profiler:
                    profiler.enable()
                for _ in range(BATCH):
                    call(path, token)
                if profiler:
                    profiler.disable()
                batches.append((time.process_time() - started) / BATCH)
            print(
                f"GET {path}: CPU per request, median of {len(batches)} batches of {BATCH}: "
                f"{statistics.median(batches) * 1e6:.1f} µs (fastest batch {min(batches) * 1e6:.1f} µs)"
            )
            if profiler:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(arguments.sort).print_stats(arguments.profile)
                print(out.getvalue())


if __name__ == "__main__":
    main()
