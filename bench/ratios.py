"""The hot paths against the performance reference, alternately, in one command: each figure with its ratio.

    .venv/bin/python bench/ratios.py --reference DIR [--duration 10] [--rounds 2] [--phases ...]

DIR is a copy of the shared performance reference (a minimal Django + DRF service doing only the bare
database work of these paths) after its `./setup.sh`; its `run_django.sh` serves and loads the
reference, its `wrk/proj_*.lua` scripts load the project with the contract's requests. The project
runs like `bench/usage.py` (a scratch database next to BENCH_DATABASE_URL, gunicorn with
gunicorn.conf.py, BENCH_PORT 8765, BENCH_WORKERS 2 sync workers), seeded with --users funded users.
Both sides get 2 wrk threads and 16 connections. For each round and phase the reference is loaded,
then the project, so machine noise falls on both:

| phase | project | reference | target |
|---|---|---|---|
| usage | `POST usage/record/`, users among all | `usage` | 0.8 |
| batch100 | `POST usage/record-batch/`, 100 events over all users (~100 distinct), events/s | `batch` rows/s | 1.0 |
| batch1000 | the same with 1,000 events over 200 users | `batch` rows/s | 1.5 |
| credits | `GET me/credits/` | `cached` | 0.8 |
| health | `GET /health` | `ping` | 0.8 |

At the end `verify_ledger` runs on the project's database and must report nothing. New `invoice.paid`
webhooks and replays are measured by `bench/webhooks.py`.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

import harness

ROOT = harness.ROOT
CONNECTIONS = 16
REFERENCE_PORT = os.environ.get("BENCH_REFERENCE_PORT", "8000")


@dataclass(frozen=True)
class Phase:
    reference: str
    script: str | None
    path: str = "/"
    token: str = "service"
    rows: int = 1
    users: int | None = None  # the first N users; all when None
    target: float = 0.8
    unit: str = "req/s"
    env: dict = field(default_factory=dict)


PHASES = {
    "usage": Phase(reference="usage", script="proj_usage.lua"),
    "batch100": Phase(
        reference="batch", script="proj_batch.lua", rows=100, target=1.0, unit="events/s", env={"BATCH": "100"}
    ),
    "batch1000": Phase(
        reference="batch",
        script="proj_batch.lua",
        rows=1000,
        users=200,
        target=1.5,
        unit="events/s",
        env={"BATCH": "1000"},
    ),
    "credits": Phase(reference="cached", script="proj_credits.lua", token="user"),
    "health": Phase(reference="ping", script=None, path="/health"),
}


@dataclass(frozen=True)
class Figure:
    per_second: float  # rows (events) per second for batches, requests otherwise
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: str = ""


def milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def reference_run(directory: str, endpoint: str, duration: float, environment: dict) -> Figure:
    """One `run_django.sh` run of the reference (2 sync workers, 16 connections) in `environment`
    (this process's, without the project's settings); its TSV line."""
    completed = subprocess.run(
        ["./run_django.sh", "sync:2", endpoint, str(CONNECTIONS)],
        cwd=directory,
        env={**environment, "DURATION": str(int(duration)), "PORT": REFERENCE_PORT},
        capture_output=True,
        text=True,
    )
    if completed.returncode:
        raise RuntimeError(f"the reference's {endpoint} run failed: {completed.stderr.strip()}")
    line = completed.stdout.strip().splitlines()[-1]
    values = dict(part.split("=", 1) for part in line.split("\t") if "=" in part)
    return Figure(
        per_second=float(values["rows/s"]),
        p50_ms=milliseconds(values["p50"]),
        p99_ms=milliseconds(values["p99"]),
        non_2xx=int(values["non2xx"] or 0),
    )


def project_run(directory: str, phase: Phase, data: dict, duration: float, port: int) -> Figure:
    """wrk against the project with the phase's script, after a 2-second warm-up."""
    ids = data["user_ids"][: phase.users] if phase.users else data["user_ids"]
    environment = {
        **os.environ,
        **phase.env,
        "TOKEN": data["service_token"] if phase.token == "service" else data["user_tokens"][0],
        "USER_MIN": str(min(ids)),
        "USER_MAX": str(max(ids)),
    }
    script = ["-s", f"{directory}/wrk/{phase.script}"] if phase.script else []
    url = f"http://127.0.0.1:{port}{phase.path}"
    options = ["--timeout", "30s", *script, url]
    # One connection warms up, and its last request is answered before the measured run: requests a
    # wrk run leaves in flight would still be served during the next.
    subprocess.run(["wrk", "-t1", "-c1", "-d2s", *options], env=environment, capture_output=True, check=True)
    time.sleep(phase.rows / 500 + 0.5)
    output = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{int(duration)}s", "--latency", *options],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    if set(latency) != {"50", "99"}:
        raise RuntimeError(f"wrk answered no latency figures:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)$", output, re.MULTILINE)
    return Figure(
        per_second=float(re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)[1]) * phase.rows,
        p50_ms=milliseconds(latency["50"]),
        p99_ms=milliseconds(latency["99"]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=socket_errors[1] if socket_errors else "",
    )


def line(name: str, phase: Phase, project: Figure, reference: Figure) -> str:
    ratio = project.per_second / reference.per_second
    mark = "meets" if ratio >= phase.target else "below"
    failed = f", {project.non_2xx} non-2xx" if project.non_2xx else ""
    failed += f", socket errors: {project.socket_errors}" if project.socket_errors else ""
    return (
        f"{name:<10} project {project.per_second:9,.0f} {phase.unit:<8} p50 {project.p50_ms:7.1f} ms "
        f"p99 {project.p99_ms:7.1f} ms{failed} | reference {phase.reference} {reference.per_second:9,.0f} "
        f"p99 {reference.p99_ms:7.1f} ms | ratio {ratio:.2f} ({mark} {phase.target})"
    )


def ledger_verified() -> str:
    """verify_ledger's report (it exits 1, ending the benchmark, when a user does not reconcile)."""
    from io import StringIO

    from django.core.management import call_command

    output = StringIO()
    call_command("verify_ledger", "--no-progress", stdout=output)
    return output.getvalue().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="A set-up copy of the performance reference.")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of load per run.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--phases", default=",".join(PHASES))
    arguments = parser.parse_args()
    directory = os.path.abspath(arguments.reference)
    phases = arguments.phases.split(",")

    reference_environment = dict(os.environ)
    base_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name, database_url = harness.create_database(base_url, "bench_ratios")
    server = None
    sys.path.insert(0, str(ROOT))
    import usage

    try:
        environment = usage.server_environment(database_url)
        os.environ.update(environment)
        data = usage.prepare(arguments.users)
        from django.db import connections

        connections.close_all()
        workers = int(os.environ.get("BENCH_WORKERS", 2))
        server = harness.start_server(environment, workers=workers, port=usage.PORT)
        print(
            f"wrk: 2 threads, {CONNECTIONS} connections, {arguments.duration:.0f} s per run; "
            f"gunicorn: reference 2, project {workers} sync workers"
        )
        for round_number in range(1, arguments.rounds + 1):
            print(f"round {round_number}")
            for phase_name in phases:
                phase = PHASES[phase_name]
                reference = reference_run(directory, phase.reference, arguments.duration, reference_environment)
                project = project_run(directory, phase, data, arguments.duration, usage.PORT)
                print(line(phase_name, phase, project, reference), flush=True)
        server.terminate()
        server.wait(timeout=30)
        server = None
        print(f"verify_ledger: {ledger_verified()}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        from django.db import connections

        connections.close_all()
        harness.drop_database(base_url, name)


if __name__ == "__main__":
    main()
