"""Periodic jobs handle each item on its own: one item that fails is logged and counted
(`job_item_failures_total{job}`) and the rest go on; the next run, or a retry of the task, picks it
up again, and every item's work is idempotent."""

import logging
from collections import Counter
from collections.abc import Callable, Iterable

from billing_project.metrics import JOB_ITEM_FAILURES

logger = logging.getLogger(__name__)


def items_run(*, job: str, items: Iterable, work: Callable[[object], str | None]) -> Counter:
    """Runs `work(item)` for each item and counts what each returned; an item that raised counts as
    `failed` (with `item_failures` listing them) instead of ending the job."""
    outcomes = Counter()
    for item in items:
        try:
            outcome = work(item)
        except Exception:  # one item's failure is reported, never the end of the job
            logger.exception("job %s: item %s failed", job, item)
            JOB_ITEM_FAILURES.labels(job=job).inc()
            outcomes["failed"] += 1
            continue
        if outcome:
            outcomes[outcome] += 1
    return outcomes
