"""Cache writes that follow a commit, gathered: those one transaction registers reach the cache in one
command where they can (a Stripe renewal's new balance generation and its event's answer: one Redis
round trip instead of two).

Django keeps, with each callback `transaction.on_commit` registers, the savepoints open at the time,
and drops the callback when one of them is rolled back. A write joins a callback registered before
it in the transaction when every savepoint open now is among that callback's: the two are then
dropped together or run together. The callback runs where the first write registered it, so a later
write is made earlier among the commit's callbacks than its own would have been; what it writes is
committed by then all the same.
"""

from collections import defaultdict

from django.core.cache import cache
from django.db import transaction


class _Writes:
    """An on-commit callback writing each (key, value, timeout) it gathered."""

    def __init__(self):
        self.items: list[tuple[str, object, float]] = []

    def __call__(self) -> None:
        if hasattr(cache, "set_many_expiring"):
            cache.set_many_expiring(self.items)
            return
        by_timeout = defaultdict(dict)
        for key, value, timeout in self.items:
            by_timeout[timeout][key] = value
        for timeout, data in by_timeout.items():
            cache.set_many(data, timeout=timeout)


def cache_set_on_commit(data: dict, *, timeout: float) -> None:
    """Writes `data` (key -> value) to the default cache, each key expiring in `timeout` seconds
    (positive), once the transaction commits (at once outside a transaction), as
    `transaction.on_commit(lambda: cache.set_many(data, timeout))` would, in one command with the
    writes registered before it in the transaction wherever they are dropped together (above)."""
    items = [(key, value, timeout) for key, value in data.items()]
    connection = transaction.get_connection()
    if connection.in_atomic_block:
        open_now = set(connection.savepoint_ids)
        for savepoints, callback, _ in reversed(connection.run_on_commit):
            if isinstance(callback, _Writes) and open_now <= savepoints:
                callback.items += items
                return
    writes = _Writes()
    writes.items += items
    transaction.on_commit(writes)
