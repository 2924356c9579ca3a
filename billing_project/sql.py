"""Statements written out where the ORM's per-query overhead (about half a millisecond of Python per
query on a small machine) was most of a hot path's cost: the usage path (credits.ledger_sql) and the
outbox (billing_project.outbound).

Rows are still model instances (the hot path's built by `new_row`), so defaults and value
preparation come from the models; only the statements are assembled here. On PostgreSQL several
writes go in one statement (data-modifying CTEs) and several reads in one round trip; SQLite, the
embedded default, runs them one by one.
"""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from functools import cache
from operator import attrgetter, itemgetter
from typing import NamedTuple
from uuid import UUID

import orjson
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models import Model, signals
from django.db.models.base import ModelState
from django.utils import timezone

# SQL and its parameters.
Statement = tuple[str, list]


def default_connection():
    """The connection object itself: going through the `connection` proxy costs a context-local
    lookup on every use, which adds up over thousands of values."""
    return connections[DEFAULT_DB_ALIAS]


# Names quoted once per process: quoting them for every statement of a request was a tenth of its
# Python time (each quote a context-local lookup of the connection).
@cache
def table(model: type[Model]) -> str:
    return default_connection().ops.quote_name(model._meta.db_table)


@cache
def column(model: type[Model], name: str) -> str:
    return default_connection().ops.quote_name(model._meta.get_field(name).column)


@cache
def _columns(model: type[Model]) -> str:
    return ", ".join(default_connection().ops.quote_name(field.column) for field in model._meta.concrete_fields)


@cache
def _new_row_plan(model: type[Model]) -> tuple[dict, tuple, dict, frozenset]:
    """What `new_row` needs of the model, worked out once: the fields' fixed defaults by attribute,
    the (attribute, callable) of the defaults made per row, the relations' attributes by name, and
    every name a value may be given by."""
    fixed, made, relations = {}, [], {}
    for field in model._meta.concrete_fields:
        if field.has_default() and callable(field.default):
            made.append((field.attname, field.default))
        else:
            fixed[field.attname] = field.get_default()
        if field.is_relation:
            relations[field.name] = field.attname
    return fixed, tuple(made), relations, frozenset([*fixed, *(attname for attname, _ in made), *relations])


def new_row(model: type[Model], **values) -> Model:
    """An unsaved instance, as `model(**values)` makes it (defaults for the fields not given, a
    related instance or None for a relation's name), without the constructor's work per field: the
    constructor was a quarter of a batch's Python time, five instances per event. When something
    listens to the construction of the model's instances, the constructor itself (it sends the signals).
    Asking the signals about the model costs more than the rest, so only when something listens at all."""
    if (signals.pre_init.receivers or signals.post_init.receivers) and (
        signals.pre_init.has_listeners(model) or signals.post_init.has_listeners(model)
    ):
        return model(**values)
    fixed, made, relations, names = _new_row_plan(model)
    if not names.issuperset(values):
        raise TypeError(f"{model.__name__} has no field named {', '.join(sorted(set(values) - names))}")
    row = model.__new__(model)
    row._state = ModelState()
    attributes = row.__dict__
    attributes.update(fixed)
    for attname, make in made:
        if attname not in values:
            attributes[attname] = make()
    attributes.update(values)
    for name, attname in relations.items():
        if name in values:  # a related instance (or None) given by the relation's name
            value = attributes.pop(name)
            attributes[attname] = None if value is None else value.pk
            row._state.fields_cache[name] = value
    return row


# Field types whose Python values PostgreSQL reads as they are, in JSON or as parameters (ints, text,
# booleans, and as text UUIDs, aware datetimes and Decimals the services have already rounded):
# preparing them value by value was a third of a batch's time.
PASSED_AS_IS = (
    models.IntegerField,
    models.CharField,
    models.TextField,
    models.BooleanField,
    models.UUIDField,
    models.DateTimeField,
    models.DecimalField,
    models.ForeignKey,
    models.JSONField,  # nested as JSON in the row; the database adapter's wrapper would be written as text
)


def _computed_on_save(field) -> bool:
    """Whether the field's value is made when the row is saved (an auto_now date), not read."""
    if type(field).pre_save is models.Field.pre_save:
        return False
    return not isinstance(field, models.DateField) or field.auto_now or field.auto_now_add


def _stamped_on_save(field) -> bool:
    """Whether the field is a creation or change time (`created_at`, `updated_at`): the rows written
    by one statement take one such time, as one transaction writes them, and send it once."""
    return type(field) is models.DateTimeField and (field.auto_now or field.auto_now_add)


def _shareable(field) -> bool:
    """Whether rows written together may send the field's value once when they all hold an equal one
    (`_shared_and_rows`): not JSON, where values Python finds equal (1, 1.0, true) are not the same
    document."""
    return not isinstance(field, models.JSONField)


class RowPlan(NamedTuple):
    """What writing a model's rows takes, worked out once per model (asking each field for every
    value of a batch was a tenth of its time): the columns in order, a getter of the attributes'
    values in that order, the (position, attribute) of the times stamped on save (`_stamped_on_save`),
    the (position, field) of the other values made on save and of those needing preparing, and
    whether rows may share each column's value (`_shareable`)."""

    columns: tuple[str, ...]
    attributes: Callable[[dict], tuple]
    stamped: tuple[tuple[int, str], ...]
    computed: tuple[tuple[int, models.Field], ...]
    prepared: tuple[tuple[int, models.Field], ...]
    shareable: tuple[bool, ...]


@cache
def _row_plan(model: type[Model]) -> RowPlan:
    fields = model._meta.concrete_fields
    return RowPlan(
        columns=tuple(field.column for field in fields),
        attributes=itemgetter(*(field.attname for field in fields)),
        stamped=tuple((index, field.attname) for index, field in enumerate(fields) if _stamped_on_save(field)),
        computed=tuple(
            (index, field)
            for index, field in enumerate(fields)
            if _computed_on_save(field) and not _stamped_on_save(field)
        ),
        prepared=tuple((index, field) for index, field in enumerate(fields) if not isinstance(field, PASSED_AS_IS)),
        shareable=tuple(_shareable(field) for field in fields),
    )


def _row_values(plan: RowPlan, obj: Model, db, now: datetime) -> list:
    """The row's values as the database takes them, in the plan's column order, its times stamped
    `now` (set on the instance too, as saving it would)."""
    attributes = obj.__dict__
    for _, attname in plan.stamped:
        attributes[attname] = now
    values = list(plan.attributes(attributes))
    for index, field in plan.computed:
        values[index] = field.pre_save(obj, add=True)
    for index, field in plan.prepared:
        values[index] = field.get_db_prep_save(values[index], db)
    return values


def _shared_and_rows(
    columns: tuple[str, ...], shareable: tuple[bool, ...], rows: list[list]
) -> tuple[dict, list[dict]]:
    """The columns whose value is the same in every row, with that value, and each row's other
    columns. Most of a usage row's forty columns are the same across a batch (zero counts of the
    token kinds it did not use, the status, often the provider and the model): sent once rather
    than per row, a hundred-event batch's JSON fell from 226 to 100 KB when its events were alike,
    and the database's CPU for the batch by about a tenth when their models and counts were mixed."""
    # The first and last values differ in most columns that vary: one comparison tells those apart.
    same = [
        may_share and values[0] == values[-1] and values.count(values[0]) == len(values)
        for may_share, values in zip(shareable, zip(*rows, strict=True), strict=True)
    ]
    shared = {column: value for column, value, is_same in zip(columns, rows[0], same, strict=True) if is_same}
    varying = [(index, column) for index, column in enumerate(columns) if not same[index]]
    return shared, [{column: row[index] for index, column in varying} for row in rows]


def _json(rows: list[dict] | dict) -> str:
    """Rows (or one row) as one JSON text. orjson takes a tenth of the standard encoder's time (4 ms for a
    hundred usage rows); it refuses integers past 64 bits, which the standard encoder writes for
    the database to refuse, as it always has (a DataError the usage path answers per event)."""
    try:
        return orjson.dumps(rows, default=str).decode()
    except orjson.JSONEncodeError:
        return json.dumps(rows, default=str)


def one_of(values: list) -> Statement:
    """A condition's right side, `column` + this, true for the column's values among `values`: on
    PostgreSQL `= ANY` of one array parameter (a placeholder per value cost a batch of a hundred
    users several milliseconds of the database driver's parsing), elsewhere `IN (...)`."""
    if default_connection().vendor == "postgresql":
        return "= ANY(%s)", [_array_text(values)]
    return f"IN ({', '.join(['%s'] * len(values))})", list(values)


def _array_text(values: list) -> str | list:
    """`values` as the text of a PostgreSQL array when they are all integers or all UUIDs, whose
    texts need no quoting there (the server reads it as the array type of the column it is compared
    with); any other list as it is, for psycopg. psycopg dumps a list value by value: 53 µs for a
    hundred integers and 134 µs for a hundred UUIDs, where this takes 10 and 20, and a batch of a
    hundred usage events sends five such lists."""
    kinds = set(map(type, values))
    if kinds == {int}:
        return "{" + ",".join(map(str, values)) + "}"
    if kinds == {UUID}:
        return "{" + ",".join([value.hex for value in values]) + "}"
    return list(values)


def insert(objs: list[Model]) -> Statement:
    """One INSERT of unsaved instances of one model. On PostgreSQL the rows travel as JSON
    (INSERT ... SELECT FROM jsonb_populate_recordset, the values they share as one record): psycopg
    quoting a parameter per column, value by value, cost about 0.4 ms for a single event, several
    times the JSON encoding. A single row travels as one record (jsonb_populate_record), which
    spares finding the values rows share and a second JSON text to write and parse."""
    db = default_connection()
    model = type(objs[0])
    fields = model._meta.concrete_fields
    columns = _columns(model)
    plan, now = _row_plan(model), timezone.now()
    if db.vendor == "postgresql" and len(objs) == 1:
        return (
            f"INSERT INTO {table(model)} ({columns}) SELECT {columns} "
            f"FROM jsonb_populate_record(NULL::{table(model)}, %s::jsonb)",
            [_json(dict(zip(plan.columns, _row_values(plan, objs[0], db, now), strict=True)))],
        )
    if db.vendor == "postgresql":
        shared, rows = _shared_and_rows(plan.columns, plan.shareable, [_row_values(plan, obj, db, now) for obj in objs])
        # A column missing from a row's JSON takes the base record's value, here the shared one.
        return (
            f"INSERT INTO {table(model)} ({columns}) SELECT {columns} FROM jsonb_populate_recordset("
            f"jsonb_populate_record(NULL::{table(model)}, %s::jsonb), %s::jsonb)",
            [_json(shared), _json(rows)],
        )
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    stamped, params = {attname for _, attname in plan.stamped}, []
    for obj in objs:
        obj.__dict__.update(dict.fromkeys(stamped, now))
        params += [
            field.get_db_prep_save(
                getattr(obj, field.attname) if field.attname in stamped else field.pre_save(obj, add=True), db
            )
            for field in fields
        ]
    return f"INSERT INTO {table(model)} ({columns}) VALUES {', '.join([row] * len(objs))}", params


def update(obj: Model, fields: list[str], *, where: str = "") -> Statement:
    """UPDATE of some fields of one row, by primary key (and `where`, as in `update_many`)."""
    model = type(obj)
    db = default_connection()
    params = []
    for name in fields:
        field = model._meta.get_field(name)
        params.append(field.get_db_prep_save(getattr(obj, field.attname), db))
    params.append(model._meta.pk.get_db_prep_value(obj.pk, db))
    return _update_sql(model, tuple(fields), where), params


@cache
def _update_sql(model: type[Model], fields: tuple[str, ...], where: str) -> str:
    assignments = ", ".join(f"{column(model, name)} = %s" for name in fields)
    return f"UPDATE {table(model)} SET {assignments} WHERE {column(model, 'id')} = %s{f' AND {where}' if where else ''}"


def update_many(objs: list[Model], fields: list[str], *, where: str = "") -> list[Statement]:
    """UPDATEs of the same fields of several rows of one model, by primary key. On PostgreSQL one
    statement, the rows' values travelling as JSON as in `insert` (the values all rows share once).
    `where`: a further condition a row must meet to be updated, over the table's columns named with
    the table (`table(model).column(model, name)`)."""
    db = default_connection()
    if db.vendor != "postgresql" or len(objs) == 1:
        return [update(obj, fields, where=where) for obj in objs]
    model = type(objs[0])
    plan = _update_many_plan(model, tuple(fields))
    values = [list(plan.attributes(obj)) for obj in objs]
    for index, field in plan.prepared:
        for row in values:
            row[index] = field.get_db_prep_save(row[index], db)
    shared, rows = _shared_and_rows(plan.columns, plan.shareable, values)
    return [(_update_many_sql(model, tuple(fields), where), [_json(shared), _json(rows)])]


@cache
def _update_many_plan(model: type[Model], fields: tuple[str, ...]) -> RowPlan:
    """`update_many`'s columns (the primary key's, then the fields'), as `_row_plan` for an insert:
    asking each field about every value of a hundred-user batch was a tenth of its UPDATEs' time."""
    changed = [model._meta.get_field(name) for name in fields]
    return RowPlan(
        columns=(model._meta.pk.column, *(field.column for field in changed)),
        attributes=attrgetter("pk", *(field.attname for field in changed)),
        stamped=(),
        computed=(),
        prepared=tuple(
            (index, field) for index, field in enumerate(changed, start=1) if not isinstance(field, PASSED_AS_IS)
        ),
        shareable=(False, *(_shareable(field) for field in changed)),
    )


@cache
def _update_many_sql(model: type[Model], fields: tuple[str, ...], where: str) -> str:
    assignments = ", ".join(f"{column(model, name)} = new.{column(model, name)}" for name in fields)
    pk = column(model, model._meta.pk.name)
    return (
        f"UPDATE {table(model)} SET {assignments} "
        f"FROM jsonb_populate_recordset(jsonb_populate_record(NULL::{table(model)}, %s::jsonb), %s::jsonb) AS new "
        f"WHERE {table(model)}.{pk} = new.{pk}{f' AND {where}' if where else ''}"
    )


class Joined(str):
    """Statements joined as one text, which Django's query log and execute wrappers see, keeping
    each statement's text and number of placeholders for the PostgreSQL backend, which sends each
    as a statement prepared on the connection (billing_project.postgresql), and whether the text
    ends with the transaction's COMMIT (`commit`)."""

    parts: tuple[tuple[str, int], ...]
    commit: bool = False


def joined(statements: list[Statement], *, commit: bool = False) -> Statement:
    """The statements as one text (`Joined`) and their parameters, in order; with `commit`, the
    transaction's COMMIT after them."""
    texts = [sql for sql, _ in statements]
    text = Joined("; ".join([*texts, "COMMIT"] if commit else texts))
    text.parts = tuple((sql, len(params)) for sql, params in statements)
    text.commit = commit
    return text, [param for _, params in statements for param in params]


def commit_carried(db) -> bool:
    """Whether the statements a caller sends last in its transaction (`commit=True` below) carry
    the transaction's COMMIT, a round trip fewer: on PostgreSQL, when the caller's atomic block is
    the outermost and commits on exit, with nothing to roll back. Django's commit at the block's
    exit then finds the transaction ended and sends nothing; its on-commit callbacks run as ever.
    Nothing may reach the database between those statements and the block's exit (the backend
    refuses it). Inside another block (a caller's, a test's) the COMMIT stays Django's."""
    return db.vendor == "postgresql" and len(db.atomic_blocks) == 1 and db.commit_on_exit and not db.needs_rollback


def execute_all(statements: list[Statement], *, commit: bool = False) -> None:
    """Runs the statements; on PostgreSQL as one round trip. `commit`: nothing follows them in the
    caller's transaction, whose COMMIT they carry where they may (`commit_carried`)."""
    if not statements:
        return
    db = default_connection()
    with db.cursor() as cursor:
        if db.vendor != "postgresql":
            for sql, params in statements:
                cursor.execute(sql, params)
            return
        cursor.execute(*joined([one_statement(statements)], commit=commit and commit_carried(db)))


def one_statement(statements: list[Statement]) -> Statement:
    """Writes as one statement: all but the last as data-modifying CTEs, which PostgreSQL runs to
    completion whether or not the last one reads them."""
    if len(statements) == 1:
        return statements[0]
    *first, (last_sql, last_params) = statements
    ctes = ", ".join(f"w{index} AS ({sql})" for index, (sql, _) in enumerate(first))
    params = [param for _, statement_params in first for param in statement_params] + last_params
    return f"WITH {ctes} {last_sql}", params


def written_then_read(writes: list[Statement], reads: list[Statement], *, commit: bool = False) -> list[list[tuple]]:
    """Runs the writes, then the reads, and returns the rows of each read; on PostgreSQL as one
    round trip. `commit`: as for `execute_all`."""
    db = default_connection()
    if db.vendor != "postgresql" or not writes or not reads:
        execute_all(writes, commit=commit and not reads)
        return read_all(reads) if reads else []
    with db.cursor() as cursor:
        cursor.execute(*joined([one_statement(writes), *reads], commit=commit and commit_carried(db)))
        results = []
        for _ in reads:
            cursor.nextset()
            results.append(cursor.fetchall())
        return results


def read_all(statements: list[Statement]) -> list[list[tuple]]:
    """Runs read statements in order and returns the rows of each. On PostgreSQL they travel as one
    round trip; each statement still takes its own snapshot (READ COMMITTED), so the reads after a
    FOR UPDATE see everything committed before the lock was granted. Reads made already in a
    `reads_primed` block are answered from their rows."""
    primed = _primed.get()
    if primed:
        keys = [_read_key(statement) for statement in statements]
        if all(key in primed for key in keys):
            return [primed.pop(key) for key in keys]
    db = default_connection()
    with db.cursor() as cursor:
        if db.vendor != "postgresql":
            results = []
            for sql, params in statements:
                cursor.execute(sql, params)
                results.append(cursor.fetchall())
            return results
        cursor.execute(*joined(statements))
        results = [cursor.fetchall()]
        while cursor.nextset():
            results.append(cursor.fetchall())
        return results


# Rows of reads made ahead, by statement (`reads_primed`).
_primed: ContextVar[dict | None] = ContextVar("primed_reads", default=None)


def _read_key(statement: Statement) -> tuple:
    text, params = statement
    return str(text), tuple(tuple(param) if isinstance(param, list) else param for param in params)


def primed_reads_drop() -> None:
    """Reads made ahead are not answered any more: a write is on its way (`appends.write_ahead`)."""
    _primed.set(None)


@contextmanager
def reads_primed(statements: list[Statement], results: list[list[tuple]]) -> Iterator[None]:
    """Within the block, a `read_all` of statements all among `statements` (the same SQL and
    parameters) is answered with their `results`, each once, instead of being sent: reads a caller
    made ahead, in a round trip it made anyway, for code that would read them next. Only until any
    other statement reaches the database: rows read before a write are not read after it."""
    if not statements:
        yield
        return
    token = _primed.set({_read_key(statement): rows for statement, rows in zip(statements, results, strict=True)})

    def unprime(execute, sql, params, many, context):
        primed_reads_drop()
        return execute(sql, params, many, context)

    try:
        with default_connection().execute_wrapper(unprime):
            yield
    finally:
        _primed.reset(token)


# Field -> the column expression and converters its raw values from the default database go
# through (none for most fields on PostgreSQL): finding them out for every value of a batch was a
# tenth of its time. The converters do not depend on which thread's connection found them.
_CONVERTERS: dict = {}


def _converters_of(field) -> tuple:
    found = _CONVERTERS.get(field)
    if found is None:
        db = default_connection()
        expression = field.get_col(field.model._meta.db_table)
        found = _CONVERTERS[field] = (
            expression,
            db.ops.get_db_converters(expression) + expression.get_db_converters(db),
        )
    return found


def converted(field, value):
    """A raw value of `field` as the ORM would have returned it."""
    expression, converters = _converters_of(field)
    if converters:
        db = default_connection()
        for converter in converters:
            value = converter(value, expression, db)
    return value


@cache
def _conversions(model: type[Model], names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple]:
    """The attribute names of the fields `names`, and (position, field) of those whose raw values
    go through converters: on PostgreSQL few do, and a batch reads a dozen values per event."""
    fields = [model._meta.get_field(name) for name in names]
    attnames = tuple(field.attname for field in fields)
    return attnames, tuple((position, field) for position, field in enumerate(fields) if _converters_of(field)[1])


def _loaded_row(with_converters: tuple, row) -> list:
    values = list(row)
    for position, field in with_converters:
        values[position] = converted(field, values[position])
    return values


def loaded_values(model: type[Model], names: tuple[str, ...], row) -> dict:
    """A row's raw values of the fields `names` (in that order) as the ORM would have loaded them, by
    attribute name."""
    attnames, with_converters = _conversions(model, names)
    return dict(zip(attnames, _loaded_row(with_converters, row), strict=True))


def instances(model: type[Model], field_names: tuple[str, ...], rows: list[tuple]) -> list[Model]:
    """Rows of `field_names` (attribute names, in that order) as the ORM would have loaded them."""
    _, with_converters = _conversions(model, tuple(field_names))
    return [model.from_db(DEFAULT_DB_ALIAS, field_names, _loaded_row(with_converters, row)) for row in rows]


@cache
def _attnames(model: type[Model]) -> tuple[str, ...]:
    return tuple(field.attname for field in model._meta.concrete_fields)


@cache
def first_statement(model: type[Model], where: str, order_by: str = "", lock: str = "") -> str:
    """The SELECT of every column of the first row of `model` where `where` holds (SQL over its
    columns, `%s` for values), in `order_by`, locked by `lock` (FOR UPDATE, FOR NO KEY UPDATE) on
    PostgreSQL (SQLite locks the whole database for a write anyway). Written once per shape: the ORM
    compiling its reads was about a fifth of a renewal webhook's Python (bench/webhooks_cpu.py --profile)."""
    statement = f"SELECT {_columns(model)} FROM {table(model)} WHERE {where}"
    if order_by:
        statement += f" ORDER BY {order_by}"
    statement += " LIMIT 1"
    if lock and default_connection().vendor == "postgresql":
        statement += f" {lock}"
    return statement


def loaded(model: type[Model], rows: list[tuple]) -> Model | None:
    """The first of rows read by a `first_statement`, as the ORM would have loaded it; None without one."""
    return instances(model, _attnames(model), rows[:1])[0] if rows else None


def first(model: type[Model], where: str, params: list, *, order_by: str = "", lock: str = "") -> Model | None:
    """The first row of `model` where `where` holds (see `first_statement`), or None."""
    return first_of(model, (first_statement(model, where, order_by, lock), params))


def first_of(model: type[Model], read: Statement) -> Model | None:
    """The row a `first_statement` read finds, or None."""
    (rows,) = read_all([read])
    return loaded(model, rows)


@cache
def exists_statement(model: type[Model], where: str) -> str:
    """A row (1) when a row of `model` where `where` holds exists, none otherwise."""
    return f"SELECT 1 FROM {table(model)} WHERE {where} LIMIT 1"


def exists(model: type[Model], where: str, params: list) -> bool:
    """Whether a row of `model` where `where` holds exists."""
    (rows,) = read_all([(exists_statement(model, where), params)])
    return bool(rows)


def values_of(model: type[Model], **values) -> list:
    """Values of the model's fields (by name or attribute name) as the database stores them, in
    order: SQLite keeps UUIDs and datetimes as text of its own forms."""
    db = default_connection()
    return [model._meta.get_field(name).get_db_prep_value(value, db) for name, value in values.items()]
