"""Cache writes that follow a commit, gathered: those one transaction registers reach the cache in one
command where they can (a Stripe renewal's new balance generation and its event's answer: one Redis
round trip instead of two).

Each write registers its own callback with `transaction.on_commit`, as it would alone, so that it
runs, or is dropped, exactly when it would. Django keeps, with each callback, the savepoints open at
the time, and drops it when one of them is rolled back. A write is also handed to a callback
registered before it in the transaction when every savepoint open now is among that callback's: the
two are then dropped together or run together. The first of them to run writes what it holds that
is not written yet, so the later one finds its write made and sends nothing. What it writes is
committed by then all the same.
"""

from collections import defaultdict
from dataclasses import dataclass

from django.core.cache import cache
from django.db import transaction


@dataclass
class _Write:
    key: str
    value: object
    timeout: float
    written: bool = False


class _Writes:
    """An on-commit callback writing those of its writes not written yet, in one cache call."""

    def __init__(self, writes: list[_Write]):
        self.writes = writes

    def __call__(self) -> None:
        pending = [write for write in self.writes if not write.written]
        if not pending:
            return
        if hasattr(cache, "set_many_expiring"):
            cache.set_many_expiring([(write.key, write.value, write.timeout) for write in pending])
        else:
            by_timeout = defaultdict(dict)
            for write in pending:
                by_timeout[write.timeout][write.key] = write.value
            for timeout, data in by_timeout.items():
                cache.set_many(data, timeout=timeout)
        for write in pending:
            write.written = True


def cache_set_on_commit(data: dict, *, timeout: float) -> None:
    """Writes `data` (key -> value) to the default cache, each key expiring in `timeout` seconds
    (positive), once the transaction commits (at once outside a transaction), as
    `transaction.on_commit(lambda: cache.set_many(data, timeout))` would, in one command with the
    writes registered before it in the transaction wherever they are dropped together (above)."""
    writes = [_Write(key, value, timeout) for key, value in data.items()]
    connection = transaction.get_connection()
    if connection.in_atomic_block:
        open_now = set(connection.savepoint_ids)
        for savepoints, callback, _ in reversed(connection.run_on_commit):
            if isinstance(callback, _Writes) and open_now <= savepoints:
                callback.writes += writes
                break
    transaction.on_commit(_Writes(writes))
