"""The web process's worker model measured, not assumed: gunicorn shapes side by side.

    .venv/bin/python bench/workers.py --reference DIR [--shapes sync:2,sync:4,gthread:2x4]
        [--connections 16,64] [--phases usage,credits,paid] [--rounds 2] [--duration 10]

A shape is `sync:W` (W sync workers) or `gthread:WxT` (W workers of T threads). The project runs as in
`bench/ratios.py` (one scratch database, production settings, the audit chain sealed by a thread every
5 s) and is loaded by the same wrk scripts (DIR: a set-up copy of the shared performance reference,
for its `wrk/proj_*.lua`). Each round starts every shape in turn at each connection count and runs
the phases, so machine noise falls on all shapes alike. Prints one line per run, then the median of
the rounds per shape. `verify_ledger` must report nothing at the end.
"""

import argparse
import statistics
import sys
import tempfile

import harness
import ratios
import usage

ROOT = harness.ROOT


def gunicorn_options(shape: str) -> tuple[int, list[str]]:
    """(workers, gunicorn options) of a shape."""
    kind, _, size = shape.partition(":")
    if kind == "sync":
        return int(size), ["--worker-class", "sync"]
    if kind == "gthread":
        workers, _, threads = size.partition("x")
        return int(workers), ["--worker-class", "gthread", "--threads", threads]
    raise ValueError(f"unknown shape {shape!r}: sync:W or gthread:WxT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="A set-up copy of the performance reference.")
    parser.add_argument("--shapes", default="sync:2,sync:4,gthread:2x4")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--phases", default="usage,credits,paid")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of load per run.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--subscriptions", type=int, default=300)
    arguments = parser.parse_args()
    shapes, phases = arguments.shapes.split(","), arguments.phases.split(",")
    connection_counts = [int(count) for count in arguments.connections.split(",")]

    sys.path.insert(0, str(ROOT))
    figures: dict[tuple[str, int, str], list[float]] = {}
    with harness.scratch_database("bench_workers") as database_url:
        environment, data = ratios.project_prepare(
            database_url,
            reference=arguments.reference,
            users=arguments.users,
            subscriptions=arguments.subscriptions,
            webhooks_too=bool("paid" in phases),
        )
        with harness.Sealer() as sealer, tempfile.TemporaryDirectory() as scratch:
            for round_number in range(1, arguments.rounds + 1):
                print(f"round {round_number}")
                for connections in connection_counts:
                    for shape in shapes:
                        workers, options = gunicorn_options(shape)
                        with harness.serving(environment, workers=workers, port=usage.PORT, options=options):
                            for phase_name in phases:
                                phase = ratios.PHASES[phase_name]
                                figure = ratios.project_run(
                                    phase, data, arguments.duration, usage.PORT, scratch, connections
                                )
                                figures.setdefault((shape, connections, phase_name), []).append(figure.per_second)
                                failed = f", {figure.non_2xx} non-2xx" if figure.non_2xx else ""
                                print(
                                    f"{shape:<12} {connections:>3} conns {phase_name:<8} "
                                    f"{figure.per_second:8,.0f} {phase.unit:<8} p50 {figure.p50_ms:7.1f} ms "
                                    f"p99 {figure.p99_ms:7.1f} ms{failed}",
                                    flush=True,
                                )
        print("median of the rounds")
        for (shape, connections, phase_name), values in figures.items():
            unit = ratios.PHASES[phase_name].unit
            print(f"{shape:<12} {connections:>3} conns {phase_name:<8} {statistics.median(values):8,.0f} {unit}")
        print(f"verify_ledger: {ratios.ledger_verified()}")
        print(sealer.report())


if __name__ == "__main__":
    main()
