"""Django's PostgreSQL backend with two round trips fewer where it can (the health check of a busy
persistent connection, and the BEGIN of every transaction), and the hot paths' INSERTs prepared.

Health check. Django checks a reused connection with a `SELECT 1` round trip before each request's
first query (CONN_HEALTH_CHECKS). A usage record needs four round trips of its own, so the check is
a fifth of its database time. Here the check runs only when the connection has been idle for
DB_HEALTH_CHECK_IDLE_SECONDS since the last request that used it: a busy worker's connection proved
itself a moment ago, and an idle one (when a restart or a dropped connection is likely to have gone
unnoticed) is checked as before. A connection that breaks under a busy worker fails that one
request (503 `database_unavailable`) and is closed when the request ends, as Django closes any
connection that raised; the next request opens a new one.

BEGIN. With autocommit off, psycopg sends BEGIN in a round trip of its own before a transaction's
first statement: a usage record's fourth, a Stripe renewal's eleventh. Here psycopg stays in
autocommit, and Django's autocommit state (what `transaction.atomic` turns off) decides instead:
a statement executed while Django is in a transaction that the server has not begun yet carries
`BEGIN; ` in front of it, in the same round trip. The other ways a statement reaches the server
(executemany, COPY, a streamed or server-side cursor) send BEGIN alone first, as psycopg would.
COMMIT and ROLLBACK are psycopg's, which send them whenever the server holds a transaction. The last
statements of an outermost block may carry its COMMIT instead (billing_project.sql's `commit_carried`):
the server then holds none when Django commits, and a statement sent in between is refused, since it
would run in a transaction of its own.

Prepared statements. Every statement travels as text with its values inlined (client-side binding,
which lets several statements share a round trip), so the server would parse and plan each one anew:
a third of a Stripe renewal's database CPU. The statements the hot paths write out (billing_project.sql,
whose joined text keeps its statements apart) are prepared instead, once per connection, and sent
as `EXECUTE name(values)` (still text, still several to a round trip), each with one plan for all
its executions: the connection's plan cache mode is `force_generic_plan`. That plan is made when
the statement is prepared, with seq scans off, so it reads through an index wherever one serves:
a plan made for a table's size at the time would keep a seq scan chosen while the table was a few
pages as it grew (6 ms per read of a usage ledger of 18,000 rows instead of 0.1). PostgreSQL makes
the plan again after an invalidation, such as an ANALYZE, for the table's size then. The mode also
covers the queries PostgreSQL runs for the foreign-key checks of every written row, planned once
per connection (planning each check anew was a quarter of a usage batch's database CPU); the ORM's
statements are sent as text and planned as before. Django's execute wrappers and query log still see
the statements themselves. PREPARE is not undone by a rollback, so the names this wrapper keeps are
the connection's, and a name is never given twice. Behind a pooler that passes one session's
statements to another (PgBouncer's transaction mode), set DB_PREPARED_STATEMENTS off.

Timestamps. Django's loader of timestamptz values parses them in Python (3.3 µs each), so that it can
give them its own time zone; on a connection whose TimeZone is UTC, as Django sets it when USE_TZ is
on, psycopg's own loader (C, in psycopg[binary]) returns the same datetimes, in UTC, in a twentieth of
the time. A renewal reads a few dozen (its subscription, payment operation and grants).
"""

import datetime
import functools
import itertools
import re
import time

import psycopg
from django.conf import settings
from django.db import ProgrammingError
from django.db.backends.postgresql import base, operations, psycopg_any
from psycopg.adapt import AdaptersMap
from psycopg.postgres import types
from psycopg.pq import Format, TransactionStatus

_TIMESTAMPTZ_OID = types["timestamptz"].oid
_PSYCOPG_TIMESTAMPTZ_LOADER = psycopg.adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT)


class UtcTimestamptzLoader(psycopg_any.BaseTzLoader):
    """Django's timestamptz loader for UTC, loading through psycopg's own where the connection's
    TimeZone is UTC (see above). `timezone` is what Django's create_cursor compares with the
    connection's time zone, to give a cursor its own loader when they differ."""

    timezone = datetime.UTC

    def __init__(self, oid, context=None):
        super().__init__(oid, context)
        if self.connection is not None and self.connection.info.parameter_status("TimeZone") == "UTC":
            self.load = _PSYCOPG_TIMESTAMPTZ_LOADER(oid, context).load


@functools.cache
def _utc_adapters(template: AdaptersMap) -> AdaptersMap:
    """Django's adapters (`template`) with the UTC timestamptz loader."""
    adapters = AdaptersMap(template)
    adapters.register_loader("timestamptz", UtcTimestamptzLoader)
    return adapters


class Cursor(base.Cursor):
    """Django's client-side binding cursor, beginning the transaction Django is in (see above)."""

    # The wrapper whose transactions this cursor's statements belong to; None for a cursor psycopg
    # makes for itself (`Connection.execute`, as in the health check), which runs in autocommit.
    wrapper = None

    def execute(self, query, params=None, **kwargs):
        _not_after_commit(self.wrapper)
        parts = getattr(query, "parts", None)
        commits = getattr(query, "commit", False)
        if parts is not None and self.wrapper is not None:
            texts = [self.wrapper.prepared_call(sql, count) for sql, count in parts]
            query = "; ".join([*texts, "COMMIT"] if commits else texts)
        if not _transaction_to_begin(self.wrapper):
            super().execute(query, params, **kwargs)
        elif not isinstance(query, str):
            self.wrapper.connection.execute("BEGIN")
            super().execute(query, params, **kwargs)
        else:
            super().execute("BEGIN; " + query, params, **kwargs)
            # Stand on the statement's own results, as if it had been sent alone.
            self.nextset()
        if commits and self.wrapper is not None:
            self.wrapper.commit_sent = True
        return self

    def executemany(self, *args, **kwargs):
        _not_after_commit(self.wrapper)
        _begin_alone(self.wrapper)
        return super().executemany(*args, **kwargs)

    def copy(self, *args, **kwargs):
        _not_after_commit(self.wrapper)
        _begin_alone(self.wrapper)
        return super().copy(*args, **kwargs)

    def stream(self, *args, **kwargs):
        _not_after_commit(self.wrapper)
        _begin_alone(self.wrapper)
        return super().stream(*args, **kwargs)


def _not_after_commit(wrapper) -> None:
    """A statement after the one that carried its transaction's COMMIT (billing_project.sql's
    `commit_carried`) would run in a transaction of its own, which Django would commit at the
    block's exit: refused, as a mistake of the code sending it."""
    if wrapper is not None and wrapper.commit_sent:
        raise ProgrammingError("The transaction's COMMIT was sent; nothing more may run before its atomic block exits.")


def _transaction_to_begin(wrapper) -> bool:
    return (
        wrapper is not None
        and not wrapper.autocommit
        and wrapper.connection.pgconn.transaction_status == TransactionStatus.IDLE
    )


def _begin_alone(wrapper) -> None:
    if _transaction_to_begin(wrapper):
        wrapper.connection.execute("BEGIN")


# Far more than the hot paths prepare (a connection seeding and renewing subscriptions prepared 28);
# a caller sending statements of ever new text cannot grow the server's memory past this.
PREPARED_PER_CONNECTION = 200
_PLACEHOLDER = re.compile(r"%([s%])")


def _numbered(sql: str) -> str:
    """`sql` with its %s placeholders as $1, $2... and %% as %, as PREPARE takes it."""
    numbers = itertools.count(1)
    return _PLACEHOLDER.sub(lambda match: f"${next(numbers)}" if match[1] == "s" else "%", sql)


# Plan nodes that read a table's rows through one of its indexes (each needs an index condition,
# or it walks the whole index), and nodes that name a table without reading it row by row
# themselves (a write, and a bitmap scan, whose index scans are below it).
_INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}
_NOT_READING = {"ModifyTable", "Bitmap Heap Scan"}


def _indexed(node: dict) -> bool:
    """Whether a plan (EXPLAIN's JSON) reads each table through an index condition. A plan made
    once has none where the condition's values decide which index serves (a partial index for
    `column <> ''`, say): reused, it would read the whole table, or a whole index, every time."""
    kind = node["Node Type"]
    if kind in _INDEX_SCANS:
        if "Index Cond" not in node:
            return False
    elif "Relation Name" in node and kind not in _NOT_READING:
        return False
    return all(_indexed(child) for child in node.get("Plans", ()))


def _call(name: str, arguments: list[str]) -> str:
    return f"EXECUTE {name}({', '.join(arguments)})" if arguments else f"EXECUTE {name}"


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(self, cursor, sql, params):
        """What the query log shows: joined statements with their values, as the ORM's are shown,
        rather than the EXECUTEs that were sent."""
        if getattr(sql, "parts", None) is not None:
            return self.compose_sql(str(sql), params)
        return super().last_executed_query(cursor, sql, params)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
    # When the connection last served a request that queried it; never, at first.
    used_at = float("-inf")
    # A statement carried the COMMIT of the transaction Django is still in (billing_project.sql).
    commit_sent = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The statements prepared on the connection open now: statement text -> name (None: sent as
        # text, its plan made once would read a table whole).
        self.prepared: dict[str, str | None] = {}
        self.prepared_numbers = itertools.count(1)

    def get_connection_params(self):
        params = {**super().get_connection_params(), "cursor_factory": Cursor}
        if self.timezone == datetime.UTC:
            params["context"] = _utc_adapters(params["context"])
        return params

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        connection.autocommit = True
        self.prepared, self.prepared_numbers = {}, itertools.count(1)
        self.commit_sent = False
        if settings.DB_PREPARED_STATEMENTS:
            connection.execute("SET plan_cache_mode = force_generic_plan")
        return connection

    def prepared_call(self, sql: str, count: int) -> str:
        """`sql` (one statement with `count` %s placeholders) as an EXECUTE of the statement
        prepared from it on this connection, with the same placeholders; prepared, in a round trip
        of its own, the first time, and its plan made then, with seq scans off (see above). `sql`
        itself when that plan does not reach every table it reads through an index condition (the
        statement is then deallocated, and planned for its values at each execution), when prepared
        statements are off, or when the connection holds PREPARED_PER_CONNECTION already. After an
        error while preparing, the name stays taken (a PREPARE outlives the error) and the
        session's settings are as they were."""
        if sql in self.prepared:
            name = self.prepared[sql]
            return sql if name is None else _call(name, ["%s"] * count)
        if not settings.DB_PREPARED_STATEMENTS or len(self.prepared) >= PREPARED_PER_CONNECTION:
            return sql
        name = f"billing_{next(self.prepared_numbers)}"
        with self.wrap_database_errors:
            cursor = self.connection.execute(
                f"SET enable_seqscan = off; PREPARE {name} AS {_numbered(sql)}; "
                f"EXPLAIN (FORMAT JSON) {_call(name, ['NULL'] * count)}; RESET enable_seqscan"
            )
            cursor.nextset()
            cursor.nextset()
            ((plan,),) = cursor.fetchall()
            if not _indexed(plan[0]["Plan"]):
                self.connection.execute(f"DEALLOCATE {name}")
                name = None
        self.prepared[sql] = name
        return sql if name is None else _call(name, ["%s"] * count)

    def _commit(self):
        self.commit_sent = False
        return super()._commit()

    def _rollback(self):
        self.commit_sent = False
        return super()._rollback()

    def _set_autocommit(self, autocommit):
        """Nothing to tell psycopg: Django's own `autocommit`, which its caller sets, is what the
        cursors read."""

    def create_cursor(self, name=None):
        if name:
            # A server-side cursor declares itself when executed, so the transaction begins first.
            # It is holdable (Django reads psycopg's autocommit), as Django makes one outside a
            # transaction: it then outlives the transaction's end, which nothing here relies on.
            _begin_alone(self)
            return super().create_cursor(name)
        cursor = super().create_cursor()
        cursor.wrapper = self
        return cursor

    def close_if_unusable_or_obsolete(self):
        # Runs at the start and the end of every request (and Celery task). `health_check_done` is
        # true only when the request ending now queried the connection: then it was just used.
        if self.connection is not None and self.health_check_done:
            self.used_at = time.monotonic()
        super().close_if_unusable_or_obsolete()

    def close_if_health_check_failed(self):
        if (
            self.connection is not None
            and not self.health_check_done
            and time.monotonic() - self.used_at < settings.DB_HEALTH_CHECK_IDLE_SECONDS
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
