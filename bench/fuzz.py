"""The API fuzzer of billing_project/tests/test_fuzz.py, run much longer, on PostgreSQL.

    .venv/bin/python bench/fuzz.py [--examples 200] [--seed N] [-k EXPRESSION]

CI runs that test with 5 derandomized examples per operation; this runs it with `--examples` random
ones per operation (FUZZ_MAX_EXAMPLES, FUZZ_RANDOM=1), `--seed` to replay a run. It creates a scratch
database next to BENCH_DATABASE_URL (default: the local PostgreSQL), on which pytest-django creates its
test database, and drops it at the end. `-k` picks operations as pytest does ("usage and record").
It prints, per operation, the examples run and the outcome, then the totals; the pytest output above
it has the failures with a curl command to reproduce each. Exits non-zero when an operation failed.
"""

import argparse
import os
import sys
import time

import harness

ROOT = harness.ROOT
TEST = "billing_project/tests/test_fuzz.py"


class Summary:
    """A pytest plugin: the outcome of each operation and, from the test module, its examples run."""

    def __init__(self):
        self.outcomes: dict[str, str] = {}
        self.module = None

    def pytest_collection_modifyitems(self, items):
        if items:
            self.module = items[0].module

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            # Schemathesis runs every operation under the test's one node id; its name carries the operation.
            operation = report.head_line.split("[", 1)[-1].removesuffix("]")
            self.outcomes.setdefault(operation, report.outcome)

    def print(self, elapsed: float) -> None:
        examples = self.module.EXAMPLES_RUN if self.module else {}
        print(f"\n{'operation':<70} {'examples':>8}  outcome")
        for operation, outcome in sorted(self.outcomes.items()):
            print(f"{operation:<70} {examples.get(operation, 0):>8}  {outcome}")
        failed = sum(outcome == "failed" for outcome in self.outcomes.values())
        print(
            f"\noperations: {len(self.outcomes)}  examples: {sum(examples.values())}  "
            f"failed operations: {failed}  time: {elapsed:.0f} s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="examples per operation")
    parser.add_argument("--seed", type=int, help="Hypothesis seed, to replay a run")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression selecting operations")
    options = parser.parse_args()

    base_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name, database_url = harness.create_database(base_url, "bench_fuzz")
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
        FUZZ_MAX_EXAMPLES=str(options.examples),
        FUZZ_RANDOM="1",
    )
    arguments = [TEST, "-q", "-p", "no:cacheprovider", "--create-db"]
    if options.seed is not None:
        arguments.append(f"--hypothesis-seed={options.seed}")
    if options.keyword:
        arguments += ["-k", options.keyword]

    import pytest  # after the environment is set: pytest-django reads DATABASE_URL at start-up

    summary = Summary()
    started = time.monotonic()
    os.chdir(ROOT)
    try:
        exit_code = pytest.main(arguments, plugins=[summary])
    finally:
        harness.drop_database(base_url, name)
    summary.print(time.monotonic() - started)
    return int(exit_code)


if __name__ == "__main__":
    sys.exit(main())
