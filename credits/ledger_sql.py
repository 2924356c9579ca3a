"""The few SQL statements of the usage hot path, written out because the ORM's per-query overhead
(about half a millisecond of Python per query on a small machine) was most of a request's cost.

Rows are still built as model instances, so defaults and value preparation come from the models;
only the statements are assembled here. On PostgreSQL all the writes of a transaction go in one
statement (data-modifying CTEs), and all the reads under the balance lock in one round trip; SQLite,
the embedded default, runs them one by one.
"""

import json

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models import Model

from credits.models import CreditHold, TokenUsageLedger, UserCreditBalance, UserCreditSource

# SQL and its parameters.
Statement = tuple[str, list]


def _db():
    """The connection object itself: going through the `connection` proxy costs a context-local
    lookup on every use, which adds up over thousands of values."""
    return connections[DEFAULT_DB_ALIAS]


def _table(model: type[Model]) -> str:
    return _db().ops.quote_name(model._meta.db_table)


def _column(model: type[Model], name: str) -> str:
    return _db().ops.quote_name(model._meta.get_field(name).column)


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


def _prepared(field, obj, db):
    value = field.pre_save(obj, add=True)
    return value if isinstance(field, PASSED_AS_IS) else field.get_db_prep_save(value, db)


def insert(objs: list[Model]) -> Statement:
    """One INSERT of unsaved instances of one model. On PostgreSQL the rows travel as one JSON
    parameter (INSERT ... SELECT FROM jsonb_populate_recordset): psycopg quoting a parameter per
    column, value by value, cost about 0.4 ms for a single event, several times the JSON encoding."""
    db = _db()
    model = type(objs[0])
    fields = model._meta.concrete_fields
    columns = ", ".join(db.ops.quote_name(field.column) for field in fields)
    if db.vendor == "postgresql":
        rows = [{field.column: _prepared(field, obj, db) for field in fields} for obj in objs]
        return (
            f"INSERT INTO {_table(model)} ({columns}) "
            f"SELECT {columns} FROM jsonb_populate_recordset(NULL::{_table(model)}, %s::jsonb)",
            [json.dumps(rows, default=str)],
        )
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [field.get_db_prep_save(field.pre_save(obj, add=True), db) for obj in objs for field in fields]
    return f"INSERT INTO {_table(model)} ({columns}) VALUES {', '.join([row] * len(objs))}", params


def update(obj: Model, fields: list[str]) -> Statement:
    """UPDATE of some fields of one row, by primary key."""
    model = type(obj)
    db = _db()
    assignments, params = [], []
    for name in fields:
        field = model._meta.get_field(name)
        assignments.append(f"{_db().ops.quote_name(field.column)} = %s")
        params.append(field.get_db_prep_save(getattr(obj, field.attname), db))
    params.append(model._meta.pk.get_db_prep_value(obj.pk, db))
    return f"UPDATE {_table(model)} SET {', '.join(assignments)} WHERE {_column(model, 'id')} = %s", params


def execute_all(statements: list[Statement]) -> None:
    """Runs the statements; on PostgreSQL as one round trip."""
    if not statements:
        return
    db = _db()
    with db.cursor() as cursor:
        if db.vendor != "postgresql" or len(statements) == 1:
            for sql, params in statements:
                cursor.execute(sql, params)
            return
        *first, (last_sql, last_params) = statements
        ctes = ", ".join(f"w{index} AS ({sql})" for index, (sql, _) in enumerate(first))
        params = [param for _, statement_params in first for param in statement_params] + last_params
        cursor.execute(f"WITH {ctes} {last_sql}", params)


def read_all(statements: list[Statement]) -> list[list[tuple]]:
    """Runs read statements in order and returns the rows of each. On PostgreSQL they travel as one
    round trip; each statement still takes its own snapshot (READ COMMITTED), so the reads after a
    FOR UPDATE see everything committed before the lock was granted."""
    db = _db()
    with db.cursor() as cursor:
        if db.vendor != "postgresql":
            results = []
            for sql, params in statements:
                cursor.execute(sql, params)
                results.append(cursor.fetchall())
            return results
        cursor.execute("; ".join(sql for sql, _ in statements), [param for _, params in statements for param in params])
        results = [cursor.fetchall()]
        while cursor.nextset():
            results.append(cursor.fetchall())
        return results


# The budget columns of the balance row (credits.budgets), read with it wherever it is read.
BUDGET_COLUMNS = (
    "budget_monthly_credits",
    "budget_hard_limit",
    "budget_month",
    "budget_spent",
    "budget_notified_percent",
)
# What opening an account reads of the balance row (see `balance_of`).
BALANCE_COLUMNS = (
    "id",
    "amount",
    "tier",
    "subscription_id",
    "auto_recharge_below",
    *BUDGET_COLUMNS,
    "balance_alerts_armed_by",
    "low_balance_notified",
    "depleted_notified",
)


def balance_lock_statement(user_id) -> Statement:
    """The BALANCE_COLUMNS of the user's balance row, locked FOR UPDATE until the transaction ends."""
    lock = " FOR UPDATE" if _db().features.has_select_for_update else ""
    columns = ", ".join(_column(UserCreditBalance, name) for name in BALANCE_COLUMNS)
    return (
        f"SELECT {columns} FROM {_table(UserCreditBalance)} WHERE {_column(UserCreditBalance, 'user')} = %s{lock}",
        [user_id],
    )


def balance_of(user_id, row: tuple) -> UserCreditBalance:
    fields = [UserCreditBalance._meta.get_field(name) for name in BALANCE_COLUMNS]
    return UserCreditBalance(
        **{field.attname: _convert(field, value) for field, value in zip(fields, row, strict=True)}, user_id=user_id
    )


def request_ids_statement(request_ids: list) -> Statement:
    """Which of these request ids already have a usage row (see `request_ids_of`)."""
    field = TokenUsageLedger._meta.get_field("request_id")
    return (
        f"SELECT {_column(TokenUsageLedger, 'request_id')} FROM {_table(TokenUsageLedger)} "
        f"WHERE {_column(TokenUsageLedger, 'request_id')} IN ({', '.join(['%s'] * len(request_ids))})",
        [field.get_db_prep_value(request_id, _db()) for request_id in request_ids],
    )


def request_ids_of(rows: list[tuple]) -> set:
    field = TokenUsageLedger._meta.get_field("request_id")
    return {_convert(field, row[0]) for row in rows}


def grants_statement(user_id) -> Statement:
    """The user's grants with credits left, in spending order (soonest expiry first, none last);
    only the fields spending needs (see `grants_of`)."""
    expires = _column(UserCreditSource, "expires_at")
    return (
        f"SELECT {_column(UserCreditSource, 'id')}, {_column(UserCreditSource, 'remaining')}, {expires} "
        f"FROM {_table(UserCreditSource)} "
        f"WHERE {_column(UserCreditSource, 'user')} = %s AND {_column(UserCreditSource, 'remaining')} > 0 "
        f"ORDER BY {expires} IS NULL, {expires}, {_column(UserCreditSource, 'created_at')}, "
        f"{_column(UserCreditSource, 'id')}",
        [user_id],
    )


def grants_of(user_id, rows: list[tuple]) -> list[UserCreditSource]:
    fields = [UserCreditSource._meta.get_field(name) for name in ("id", "remaining", "expires_at")]
    return [
        UserCreditSource(
            **{field.attname: _convert(field, value) for field, value in zip(fields, row, strict=True)}, user_id=user_id
        )
        for row in rows
    ]


def from_db(model: type[Model], name: str, value):
    """A raw column value as the ORM would have returned it (SQLite returns text for UUIDs and dates)."""
    return _convert(model._meta.get_field(name), value)


def _convert(field, value):
    column = field.get_col(field.model._meta.db_table)
    db = _db()
    for converter in db.ops.get_db_converters(column) + column.get_db_converters(db):
        value = converter(value, column, db)
    return value


def holds_live_statement(user_id, now) -> Statement:
    """Credits held by the user's live holds (held and not past their expiry): one row, one number."""
    return (
        f"SELECT COALESCE(SUM({_column(CreditHold, 'amount')}), 0) FROM {_table(CreditHold)} "
        f"WHERE {_column(CreditHold, 'user')} = %s AND {_column(CreditHold, 'status')} = 'held' "
        f"AND {_column(CreditHold, 'expires_at')} > %s",
        [user_id, CreditHold._meta.get_field("expires_at").get_db_prep_value(now, _db())],
    )


def holds_live_amount(user_id, now) -> int:
    ((held,),) = read_all([holds_live_statement(user_id, now)])[0]
    return int(held)


def balance_and_live_grants(user_id, now) -> tuple[int, list[dict], dict | None]:
    """The stored balance, the unexpired grants with credits left, in spending order, and the
    BUDGET_COLUMNS of the balance row (None without one), in one query (`me/credits/` is the most
    frequent read of the API)."""
    db = _db()
    balance, grant = _table(UserCreditBalance), _table(UserCreditSource)
    expires = f"g.{_column(UserCreditSource, 'expires_at')}"
    names = ("id", "source", "remaining", "original_amount", "expires_at")
    columns = ", ".join(f"g.{_column(UserCreditSource, name)}" for name in names)
    budget_columns = ", ".join(f"b.{_column(UserCreditBalance, name)}" for name in BUDGET_COLUMNS)
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT b.{_column(UserCreditBalance, 'amount')}, {budget_columns}, {columns} FROM {balance} b "
            f"LEFT JOIN {grant} g ON g.{_column(UserCreditSource, 'user')} = b.{_column(UserCreditBalance, 'user')} "
            f"AND g.{_column(UserCreditSource, 'remaining')} > 0 AND ({expires} IS NULL OR {expires} > %s) "
            f"WHERE b.{_column(UserCreditBalance, 'user')} = %s "
            f"ORDER BY {expires} IS NULL, {expires}, g.{_column(UserCreditSource, 'created_at')}, "
            f"g.{_column(UserCreditSource, 'id')}",
            [UserCreditSource._meta.get_field("expires_at").get_db_prep_value(now, db), user_id],
        )
        rows = cursor.fetchall()
    if not rows:
        return 0, [], None
    budget_fields = [UserCreditBalance._meta.get_field(name) for name in BUDGET_COLUMNS]
    budget = {field.name: _convert(field, value) for field, value in zip(budget_fields, rows[0][1:], strict=False)}
    fields = [UserCreditSource._meta.get_field(name) for name in names]
    first_grant_column = 1 + len(BUDGET_COLUMNS)
    grants = [
        {field.name: _convert(field, value) for field, value in zip(fields, row[first_grant_column:], strict=True)}
        for row in rows
        if row[first_grant_column] is not None
    ]
    return rows[0][0], grants, budget
