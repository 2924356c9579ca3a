"""The hot paths against the performance reference, alternately, in one command: each figure with its ratio.

    .venv/bin/python bench/ratios.py --reference DIR [--duration 10] [--rounds 2] [--phases ...] [--waits]

DIR is a copy of the shared performance reference (a minimal Django + DRF service doing only the bare
database work of these paths) after its `./setup.sh`; its `run_django.sh` serves and loads the
reference, its `wrk/proj_*.lua` scripts load the project with the contract's requests. The project
runs like `bench/usage.py` (a scratch database next to BENCH_DATABASE_URL, gunicorn with
gunicorn.conf.py, BENCH_PORT 8765, BENCH_WORKERS 2 sync workers), seeded with --users funded users.
Both sides get 2 wrk threads and 16 connections. For each round and phase the reference is loaded,
then the project, so machine noise falls on both; at the end each phase's ratios over the rounds,
their median and how many rounds met the whole target, then what bounds two of them (`context`): the
reference's `cached` against its `ping` beside the redeliveries against `cached`, and the rate a p99
under 2 s for 1,000-event batches needs at 16 connections:

| phase | project | reference | target |
|---|---|---|---|
| usage | `POST usage/record/`, users among all | `usage` | 0.8, p99 within 1.5x the reference's |
| batch100 | `POST usage/record-batch/`, 100 events over all users (~100 distinct), events/s | `batch` rows/s | 1.0 |
| batch1000 | the same with 1,000 events over 200 users | `batch` rows/s | 1.5, p99 under 2 s |
| credits | `GET me/credits/` | `cached` | 0.8 |
| health | `GET /health` | `ping` | 0.8 |
| paid | signed `invoice.paid` renewals, each new (`bench/webhooks.py`'s events) | `usage` | 0.5 |
| replay | deliveries of events already processed, answered from the cached answer | `ping` | 0.5 |

The webhook phases renew --subscriptions Stripe-billed subscriptions of the same server: the deliveries
are built and signed before each run and sent by wrk (`bench/wrk/stripe_webhook.lua`), and a thread of
this process seals the audit chain every 5 s as the beat job does in production.
At the end `verify_ledger` runs on the project's database and must report nothing, and the audit chain
is sealed to its end and verified.

Under each figure, how the machine's CPU was spent during that run: each process group's share of
both cores (gunicorn, postgres, redis, wrk; `foreign` is anything else running: the run's noise, and
for the webhook phases also this process's sealing thread), as the reference's own `cpu_split.py`
counts it for both sides. With --waits, also how the project's database sessions spent the run
(`harness.SessionWaits`: the mean number running a statement, waiting for a lock, on the WAL, on
anything else, and idle in a transaction while their client works; the sealing thread's session
counts too). Its polls (one query every 20 ms) cost about 1 % of the machine, so the figures are
taken without them.
"""

import argparse
import contextlib
import math
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import harness
import usage
import webhooks

ROOT = harness.ROOT
CONNECTIONS = 16
REFERENCE_PORT = os.environ.get("BENCH_REFERENCE_PORT", "8000")
# New renewals prepared per second of load: well above what 2 workers answer on a small machine.
RENEWALS_PER_SECOND = 600


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
    webhook: str | None = None  # a bench/webhooks.py phase instead of a wrk script
    p99_times_reference: float | None = None  # the project's p99 at most this many times the reference's
    p99_ms: float | None = None  # the project's p99 under this

    def verdict(self, project: "Figure", reference: "Figure") -> tuple[float, list[str]]:
        """The ratio, and what of the target it misses (nothing when it meets it)."""
        ratio = project.per_second / reference.per_second
        missed = [f"ratio below {self.target}"] if ratio < self.target else []
        if self.p99_times_reference and project.p99_ms > self.p99_times_reference * reference.p99_ms:
            missed.append(f"p99 above {self.p99_times_reference}x the reference's")
        if self.p99_ms and project.p99_ms >= self.p99_ms:
            missed.append(f"p99 not under {self.p99_ms / 1000:g} s")
        return ratio, missed


PHASES = {
    "usage": Phase(reference="usage", script="proj_usage.lua", p99_times_reference=1.5),
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
        p99_ms=2000,
    ),
    "credits": Phase(reference="cached", script="proj_credits.lua", token="user"),
    "health": Phase(reference="ping", script=None, path="/health"),
    "paid": Phase(reference="usage", script=None, target=0.5, unit="events/s", webhook="paid"),
    "replay": Phase(reference="ping", script=None, target=0.5, webhook="replay"),
}


@dataclass(frozen=True)
class Figure:
    per_second: float  # rows (events) per second for batches, requests otherwise
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: str = ""
    cpu: str = ""  # each process group's share of the machine during the run, e.g. "gunicorn 46%"
    waits: str = ""  # the project's database sessions during the run (harness.SessionWaits)


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
        cpu=cpu_shares(re.findall(r"(\w+)=([\d.]+)%", line)),
    )


def cpu_shares(groups: list[tuple[str, str]]) -> str:
    """(process group, percent of the machine) pairs, as cpu_split.py reports them, in one line."""
    return ", ".join(f"{name} {float(percent):.0f}%" for name, percent in groups if float(percent) >= 0.5)


def deliveries_file(payloads: list[str], secret: str, threads: int, directory: str) -> str:
    """The payloads signed now, dealt round-robin into one file per wrk thread (FILE.0, FILE.1, ...) as
    bench/wrk/stripe_webhook.lua reads them; returns FILE."""
    prefix = tempfile.mktemp(prefix="deliveries-", dir=directory)
    for thread in range(threads):
        with open(f"{prefix}.{thread}", "w") as file:
            for payload in payloads[thread::threads]:
                file.write(f"{webhooks.signature(payload, secret)}\t{payload}\n")
    return prefix


def webhook_environments(phase: Phase, data: dict, duration: float, directory: str) -> tuple[dict, dict]:
    """The warm-up's and the measured run's environments for bench/wrk/stripe_webhook.lua. New
    renewals: RENEWALS_PER_SECOND for each second, none sent twice (the script reports a thread that
    runs out). Replays: a pool of events delivered once now, then sent again and again."""
    events, secret = data["events"], data["webhook_secret"]
    if phase.webhook == "paid":
        warm_up = [events.next_renewal() for _ in range(2 * RENEWALS_PER_SECOND)]
        measured = [events.next_renewal() for _ in range(int(duration * RENEWALS_PER_SECOND))]
        cycle = "0"
    else:
        if not data.get("replay_pool"):
            data["replay_pool"] = [events.next_renewal() for _ in range(webhooks.REPLAY_POOL)]
            for payload in data["replay_pool"]:
                delivered = webhooks.delivered(payload, secret, port=data["port"])
                if delivered != 200:
                    raise RuntimeError(f"a delivery to replay was answered {delivered}")
        warm_up = measured = data["replay_pool"]
        cycle = "1"
    return (
        {"WEBHOOK_FILE": deliveries_file(warm_up, secret, 1, directory), "WEBHOOK_CYCLE": "1"},
        {"WEBHOOK_FILE": deliveries_file(measured, secret, 2, directory), "WEBHOOK_CYCLE": cycle},
    )


def project_run(
    phase: Phase,
    data: dict,
    duration: float,
    port: int,
    scratch: str,
    connections: int = CONNECTIONS,
    *,
    waits: bool = False,
) -> Figure:
    """wrk against the project with the phase's script, after a 2-second warm-up; with `waits`, its
    database sessions sampled meanwhile (harness.SessionWaits)."""
    if phase.webhook:
        warm_up_settings, settings = webhook_environments(phase, data, duration, scratch)
        script = str(ROOT / "bench/wrk/stripe_webhook.lua")
    else:
        ids = data["user_ids"][: phase.users] if phase.users else data["user_ids"]
        token = data["service_token"] if phase.token == "service" else data["user_tokens"][0]
        settings = {**phase.env, "TOKEN": token, "USER_MIN": str(min(ids)), "USER_MAX": str(max(ids))}
        warm_up_settings = settings
        script = f"{data['reference']}/wrk/{phase.script}" if phase.script else None
    url = f"http://127.0.0.1:{port}{phase.path}"
    options = ["--timeout", "30s", *(["-s", script] if script else []), url]
    # One connection warms up, and its last request is answered before the measured run: requests a
    # wrk run leaves in flight would still be served during the next.
    subprocess.run(
        ["wrk", "-t1", "-c1", "-d2s", *options], env={**os.environ, **warm_up_settings}, capture_output=True, check=True
    )
    time.sleep(phase.rows / 500 + 0.5)
    # Under the reference's own cpu_split.py, which reports on stderr after wrk's output.
    sessions = harness.SessionWaits(data["database_url"]) if waits else None
    with sessions or contextlib.nullcontext():
        completed = subprocess.run(
            [
                sys.executable,
                f"{data['reference']}/cpu_split.py",
                "--label",
                "project",
                "--",
                *["wrk", "-t2", f"-c{connections}", f"-d{int(duration)}s", "--latency", *options],
            ],
            env={**os.environ, **settings},
            capture_output=True,
            text=True,
            check=True,
        )
    output = completed.stdout
    if (ran_out := re.search(r"threads that ran out of deliveries: (\d+)", output)) and int(ran_out[1]):
        raise RuntimeError("the prepared renewals ran out: raise RENEWALS_PER_SECOND")
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
        cpu=cpu_shares(re.findall(r"^cpu (\w+)\s+[\d.]+s\s+([\d.]+)%$", completed.stderr, re.MULTILINE)),
        waits=sessions.summary() if sessions else "",
    )


def shown(ratio: float) -> str:
    """A ratio cut (not rounded) to two decimals, so that a printed 0.50 meets a target of 0.5."""
    return f"{math.floor(round(ratio * 100, 6)) / 100:.2f}"  # round first: 0.29 * 100 is 28.999...


def line(name: str, phase: Phase, project: Figure, reference: Figure) -> str:
    ratio, missed = phase.verdict(project, reference)
    mark = f"misses: {'; '.join(missed)}" if missed else "meets the target"
    failed = f", {project.non_2xx} non-2xx" if project.non_2xx else ""
    failed += f", socket errors: {project.socket_errors}" if project.socket_errors else ""
    return (
        f"{name:<10} project {project.per_second:9,.0f} {phase.unit:<8} p50 {project.p50_ms:7.1f} ms "
        f"p99 {project.p99_ms:7.1f} ms{failed} | reference {phase.reference} {reference.per_second:9,.0f} "
        f"p99 {reference.p99_ms:7.1f} ms | ratio {shown(ratio)} ({mark})\n"
        f"{'':<10} cpu: project {project.cpu} | reference {reference.cpu}"
        + (f"\n{'':<10} database sessions: {project.waits}" if project.waits else "")
    )


def summary(figures: dict[str, list[tuple[Figure, Figure]]]) -> str:
    """Each phase's ratios over the rounds, their median, and how many rounds met the whole target: the
    machine's speed moves by tens of percent within minutes, so one round decides little."""
    lines = ["summary (ratio per round; median; rounds meeting the target)"]
    for name, runs in figures.items():
        verdicts = [PHASES[name].verdict(project, reference) for project, reference in runs]
        ratios = [ratio for ratio, _ in verdicts]
        met = sum(1 for _, missed in verdicts if not missed)
        lines.append(
            f"{name:<10} {' '.join(shown(ratio) for ratio in ratios)}; median {shown(statistics.median(ratios))}; "
            f"{met} of {len(runs)}"
        )
    return "\n".join(lines)


def context(figures: dict[str, list[tuple[Figure, Figure]]]) -> str:
    """What bounds two targets, from the same rounds' figures. A redelivery is answered from the shared
    cache: one Redis read, as the reference's `cached` is, whose own ratio to `ping` is printed beside the
    redelivery's ratio to `cached`. And a p99 under 2 s for 1,000-event batches at CONNECTIONS
    connections needs, by Little's law (a request's mean time = requests in the system / their rate),
    at least CONNECTIONS x 1,000 / 2 s events per second, whatever the reference does."""
    lines = []
    if "replay" in figures and "credits" in figures:
        cached = [reference.per_second for _, reference in figures["credits"]]
        replay = figures["replay"]
        lines.append(
            "replay     the reference's cached against its ping "
            + " ".join(f"{rate / ping.per_second:.2f}" for rate, (_, ping) in zip(cached, replay, strict=True))
            + "; the project's replay against the reference's cached "
            + " ".join(f"{project.per_second / rate:.2f}" for rate, (project, _) in zip(cached, replay, strict=True))
        )
    if "batch1000" in figures:
        phase = PHASES["batch1000"]
        needed = CONNECTIONS * phase.rows / (phase.p99_ms / 1000)
        lines.append(
            f"batch1000  its p99 target needs at least {needed:,.0f} events/s at {CONNECTIONS} connections; made "
            + " ".join(f"{project.per_second:,.0f}" for project, _ in figures["batch1000"])
        )
    return "\n".join(lines)


def project_prepare(database_url: str, *, reference: str, users: int, subscriptions: int, webhooks_too: bool):
    """The project's server environment on the scratch database (this process's too) and what its
    loads need: funded users and tokens, and with webhooks_too Stripe-billed subscriptions to renew."""
    webhook_secret = f"whsec_{secrets.token_hex(24)}"
    environment = webhooks.server_environment(database_url, webhook_secret, port=usage.PORT)
    os.environ.update(environment)
    data = {
        **usage.prepare(users),
        "reference": os.path.abspath(reference),
        "webhook_secret": webhook_secret,
        "port": usage.PORT,
        "database_url": database_url,
    }
    if webhooks_too:
        data["events"] = webhooks.Events(webhooks.prepare(subscriptions)["subscriptions"])
    return environment, data


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
    parser.add_argument("--subscriptions", type=int, default=500)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--waits", action="store_true", help="Sample the project's database sessions.")
    arguments = parser.parse_args()
    directory = os.path.abspath(arguments.reference)
    phases = arguments.phases.split(",")
    workers = int(os.environ.get("BENCH_WORKERS", 2))

    reference_environment = dict(os.environ)
    sys.path.insert(0, str(ROOT))
    with harness.scratch_database("bench_ratios") as database_url:
        environment, data = project_prepare(
            database_url,
            reference=arguments.reference,
            users=arguments.users,
            subscriptions=arguments.subscriptions,
            webhooks_too=bool({"paid", "replay"} & set(phases)),
        )
        with (
            harness.serving(environment, workers=workers, port=usage.PORT),
            harness.Sealer() as sealer,
            tempfile.TemporaryDirectory() as scratch,
        ):
            print(
                f"wrk: 2 threads, {CONNECTIONS} connections, {arguments.duration:.0f} s per run; "
                f"gunicorn: reference 2, project {workers} sync workers"
            )
            figures: dict[str, list[tuple[Figure, Figure]]] = {name: [] for name in phases}
            for round_number in range(1, arguments.rounds + 1):
                print(f"round {round_number}")
                for phase_name in phases:
                    phase = PHASES[phase_name]
                    reference = reference_run(directory, phase.reference, arguments.duration, reference_environment)
                    project = project_run(phase, data, arguments.duration, usage.PORT, scratch, waits=arguments.waits)
                    figures[phase_name].append((project, reference))
                    print(line(phase_name, phase, project, reference), flush=True)
            print(summary(figures))
            if notes := context(figures):
                print(notes)
        print(f"verify_ledger: {ledger_verified()}")
        print(sealer.report())


if __name__ == "__main__":
    main()
