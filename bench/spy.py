"""Where a loaded worker's time goes: py-spy samples every gunicorn worker while wrk runs one phase.

    .venv/bin/python bench/spy.py --reference DIR --phase paid [--duration 10] [--top 25] [--match TEXT]

The project runs as in `bench/ratios.py` (scratch database, production settings, 2 sync workers or
BENCH_WORKERS, the audit chain sealed by a thread every 5 s) and one of its phases loads it (DIR: a
set-up copy of the shared performance reference, for its `wrk/proj_*.lua`). py-spy (requirements-dev)
samples the workers 200 times a second while they work and this prints the functions holding the
most samples: by their own time, and with what they call (`--match` keeps the functions whose file or
name contains TEXT, e.g. `billing` or `/credits/`). `--raw FILE` keeps the collapsed stacks (for a
flame graph). Sampling slows the workers a little, so the requests per second printed are not a
benchmark figure.
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import threading

import harness
import ratios
import usage

ROOT = harness.ROOT
RATE = 200
FRAME = re.compile(r"(.*) \((.*?):\d+\)")


def stacks_read(path: str) -> list[tuple[list[str], int]]:
    """py-spy's raw output: one `frame;frame;...;frame count` line per distinct stack, outermost first."""
    stacks = []
    with open(path, errors="replace") as file:
        for line in file:
            frames, _, count = line.rstrip("\n").rpartition(" ")
            if frames and count.isdigit():
                # The process and thread labels py-spy puts first name no function.
                stacks.append(([frame for frame in frames.split(";") if FRAME.fullmatch(frame)], int(count)))
    return stacks


def function_of(frame: str) -> str:
    """`name (path/to/file.py:123)` -> `name (to/file.py)`: one entry per function, not per line."""
    name, path = FRAME.fullmatch(frame).groups()
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def report(stacks: list[tuple[list[str], int]], top: int, match: str) -> None:
    total = sum(count for _, count in stacks)
    own, inclusive = collections.Counter(), collections.Counter()
    for frames, count in stacks:
        functions = [function_of(frame) for frame in frames]
        if functions:
            own[functions[-1]] += count
        for function in set(functions):
            inclusive[function] += count
    print(f"{total} samples of busy workers")
    for title, counter in (("own time", own), ("with what it calls", inclusive)):
        print(f"-- {title}")
        shown = [(name, count) for name, count in counter.most_common() if match in name][:top]
        for name, count in shown:
            print(f"{100 * count / total:6.1f} %  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="A set-up copy of the performance reference.")
    parser.add_argument("--phase", default="usage", choices=list(ratios.PHASES))
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of load (and of sampling).")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="Only functions whose name or file contains this.")
    parser.add_argument("--raw", help="Also keep py-spy's collapsed stacks in this file.")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--subscriptions", type=int, default=200)
    arguments = parser.parse_args()
    phase = ratios.PHASES[arguments.phase]
    workers = int(os.environ.get("BENCH_WORKERS", 2))

    sys.path.insert(0, str(ROOT))
    with harness.scratch_database("bench_spy") as database_url:
        environment, data = ratios.project_prepare(
            database_url,
            reference=arguments.reference,
            users=arguments.users,
            subscriptions=arguments.subscriptions,
            webhooks_too=bool(phase.webhook),
        )
        with (
            harness.serving(environment, workers=workers, port=usage.PORT) as server,
            harness.Sealer(),
            tempfile.TemporaryDirectory() as scratch,
        ):
            raw = arguments.raw or os.path.join(scratch, "stacks.txt")
            # The sampler starts with the measured run (after the phase's warm-up) and ends with it.
            sampler = threading.Timer(
                2.0 + phase.rows / 500 + 0.5,
                subprocess.run,
                args=[
                    [
                        str(ROOT / ".venv/bin/py-spy"),
                        "record",
                        "--pid",
                        str(server.pid),
                        "--subprocesses",
                        "--nonblocking",
                        "--rate",
                        str(RATE),
                        "--duration",
                        str(int(arguments.duration)),
                        "--format",
                        "raw",
                        "--output",
                        raw,
                    ]
                ],
                kwargs={"capture_output": True, "check": True},
            )
            sampler.start()
            figure = ratios.project_run(phase, data, arguments.duration, usage.PORT, scratch)
            sampler.join()
            print(f"{arguments.phase}: {figure.per_second:,.0f} {phase.unit} while sampled")
            report(stacks_read(raw), arguments.top, arguments.match)


if __name__ == "__main__":
    main()
