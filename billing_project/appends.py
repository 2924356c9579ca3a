"""New rows of append-only records (outbound events, audit rows, payment events) written together at
the end of a block of a transaction instead of one round trip each.

A Stripe renewal writes six such rows between its other statements; inside `appends_deferred()` they
are kept and, when the block ends, written by one statement per model, all sent in one round trip
with the caller's last write (the webhook row's outcome) and the reads that follow from them (the
webhook endpoints that want the outbound events). Nothing in the block reads them back, and their
foreign keys are checked at commit (PostgreSQL's and SQLite's constraints are deferred), so a row may
name one written after it.

A row is written at once outside a block, and inside a savepoint opened within the block: that
savepoint may be rolled back while the block goes on (an effect that no longer applies), and the row
must go with it.

The same goes for a saved row's fields that nothing in the block reads back from the database (a
subscription's note of the newest Stripe event applied to it, `update_deferred`): written in that
round trip too, from the instance's values when the block ends.

A write whose result nobody waits for but that later statements may read (a renewal's payment
transaction, its credit grant and its subscription's new period, `write_ahead`) is sent ahead of the
next statement that reaches the database in the block, in that statement's round trip, as a
statement of its own: whatever reads next sees it.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.db import DEFAULT_DB_ALIAS, models

from billing_project import sql


def _savepoints() -> int:
    """How many savepoints the transaction has open (an atomic block without one counts none)."""
    return sum(1 for sid in sql.default_connection().savepoint_ids if sid)


@dataclass
class Appends:
    savepoints: int = 0  # open when the block began
    rows: list[models.Model] = field(default_factory=list)
    # Reads sent after the rows (each once, by its SQL and parameters), and what to do with their rows.
    reads: dict[tuple[str, tuple], list[Callable[[list[tuple]], None]]] = field(default_factory=dict)
    # Saved rows to update, by model and primary key: the instance and its fields.
    updates: dict[tuple[type, object], tuple[models.Model, set[str]]] = field(default_factory=dict)
    # Writes to send ahead of the next statement (`write_ahead`).
    ahead: list[sql.Statement] = field(default_factory=list)

    def write(self, last: sql.Statement | None = None, *, commit: bool = False) -> None:
        """Writes the kept rows and then `last`, in one round trip on PostgreSQL, and hands each read
        its rows. `commit`: nothing follows in the caller's transaction (sql.commit_carried)."""
        by_model: dict[type, list[models.Model]] = {}
        for row in self.rows:
            by_model.setdefault(type(row), []).append(row)
        writes = [sql.insert(rows) for rows in by_model.values()]
        writes += [sql.update(instance, sorted(fields)) for instance, fields in self.updates.values()]
        writes += [last] if last else []
        reads = list(self.reads)
        results = sql.written_then_read(
            writes, [(statement, list(params)) for statement, params in reads], commit=commit
        )
        for row in self.rows:
            row._state.adding, row._state.db = False, DEFAULT_DB_ALIAS
        for read, rows in zip(reads, results, strict=True):
            for then in self.reads[read]:
                then(rows)
        self.rows, self.reads, self.updates = [], {}, {}

    def add(self, row: models.Model, read: sql.Statement | None, then) -> None:
        self.rows.append(row)
        if read is not None:
            self.reads.setdefault((read[0], tuple(read[1])), []).append(then)

    def update(self, instance: models.Model, fields: list[str]) -> None:
        key = (type(instance), instance.pk)
        _, known = self.updates.get(key, (None, set()))
        self.updates[key] = (instance, known | set(fields))


_current: ContextVar[Appends | None] = ContextVar("appends", default=None)


@contextmanager
def appends_deferred() -> Iterator[Appends]:
    """Keeps the rows appended in the block and writes them when it ends, unless the caller did with
    its last write (`write(last=...)`). A block left by an exception writes nothing: its transaction
    is rolled back."""
    appends = Appends(savepoints=_savepoints())
    token = _current.set(appends)
    try:
        with sql.default_connection().execute_wrapper(_ahead_sent_first):
            yield appends
            appends.write()
            # Taken off the block first: the wrapper would otherwise send them ahead of themselves.
            ahead, appends.ahead = appends.ahead, []
            sql.execute_all(ahead)
    finally:
        _current.reset(token)


def _ahead_sent_first(execute, statement, params, many, context):
    """Sends the block's writes ahead of `statement`: in its round trip when it is statements of
    billing_project.sql (the hot paths' reads and writes), alone first otherwise."""
    appends = _current.get()
    if appends is None or not appends.ahead:
        return execute(statement, params, many, context)
    ahead, appends.ahead = appends.ahead, []
    parts = getattr(statement, "parts", None)
    if many or parts is None:
        execute(*sql.joined(ahead), False, context)
        return execute(statement, params, many, context)
    statements, position = [], 0
    for part, count in parts:
        statements.append((part, list(params[position : position + count])))
        position += count
    result = execute(*sql.joined([*ahead, *statements], commit=statement.commit), False, context)
    for _ in ahead:
        context["cursor"].nextset()
    return result


def _block_keeping() -> Appends | None:
    """The block that keeps a write made now: None outside a block and inside a savepoint opened
    within it (the write is then made at once)."""
    appends = _current.get()
    return None if appends is None or _savepoints() > appends.savepoints else appends


def append(
    row: models.Model, *, read: sql.Statement | None = None, then: Callable[[list[tuple]], None] | None = None
) -> None:
    """Writes a new append-only row, now or with the block around it. `read` is run after the row is
    written (an equal read once for all the rows that ask for it) and its rows passed to `then`."""
    appends = _block_keeping()
    if appends is None:
        appends = Appends()
        appends.add(row, read, then)
        appends.write()
    else:
        appends.add(row, read, then)


def write_ahead(*statements: sql.Statement) -> None:
    """Sends writes ahead of the next statement that reaches the database in the block around it
    (see above), or at the block's end, as one statement (`sql.one_statement`); at once outside a
    block, and on SQLite, which takes one statement at a time."""
    if not statements:
        return
    appends = _block_keeping()
    if appends is None or sql.default_connection().vendor != "postgresql":
        sql.execute_all(list(statements))
    else:
        sql.primed_reads_drop()
        appends.ahead.append(sql.one_statement(list(statements)))


def update_deferred(instance: models.Model, fields: list[str]) -> None:
    """Writes `fields` of a saved row (no signals, as `sql.update`), now or at the end of the block
    around it, from the instance's values then: only for fields nothing in the block reads back from
    the database."""
    appends = _block_keeping()
    if appends is None:
        sql.execute_all([sql.update(instance, fields)])
    else:
        appends.update(instance, fields)
