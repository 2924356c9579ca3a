"""The few SQL statements of the usage hot path (billing_project.sql says why they are written out).
On PostgreSQL all the writes of a transaction go in one statement (data-modifying CTEs), and all
the reads under the balance lock in one round trip; SQLite, the embedded default, runs them one by one.
"""

from functools import cache

from billing_project.sql import (
    Statement,
    column,
    converted,
    default_connection,
    loaded_values,
    new_row,
    one_of,
    read_all,
    table,
)
from credits.models import CreditHold, TokenUsageLedger, UserCreditBalance, UserCreditSource

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


def balances_lock_statement(user_ids: list, *, skip_locked: bool = False) -> Statement:
    """The users' balance rows (user id, then the BALANCE_COLUMNS), locked FOR UPDATE until the
    transaction ends, in ascending user id: one statement takes them all in the documented order.
    `skip_locked`: the rows another transaction holds are left out instead of waited for."""
    features = default_connection().features
    lock = " FOR UPDATE" if features.has_select_for_update else ""
    if lock and skip_locked and features.has_select_for_update_skip_locked:
        lock += " SKIP LOCKED"
    user = column(UserCreditBalance, "user")
    columns = ", ".join(column(UserCreditBalance, name) for name in BALANCE_COLUMNS)
    among, params = one_of(user_ids)
    return (
        f"SELECT {user}, {columns} FROM {table(UserCreditBalance)} WHERE {user} {among} ORDER BY {user}{lock}",
        params,
    )


def balance_of(row: tuple) -> UserCreditBalance:
    """A balance row of `balances_lock_statement`."""
    return new_row(UserCreditBalance, **loaded_values(UserCreditBalance, BALANCE_COLUMNS, row[1:]), user_id=row[0])


def request_ids_statement(request_ids: list) -> Statement:
    """Which of these request ids already have a usage row (see `request_ids_of`)."""
    field, connection = TokenUsageLedger._meta.get_field("request_id"), default_connection()
    among, params = one_of([field.get_db_prep_value(request_id, connection) for request_id in request_ids])
    return (
        f"SELECT {column(TokenUsageLedger, 'request_id')} FROM {table(TokenUsageLedger)} "
        f"WHERE {column(TokenUsageLedger, 'request_id')} {among}",
        params,
    )


def request_ids_of(rows: list[tuple]) -> set:
    field = TokenUsageLedger._meta.get_field("request_id")
    return {converted(field, row[0]) for row in rows}


# What spending needs of a grant (with its user).
_SPENDING_COLUMNS = ("id", "remaining", "expires_at")


def grants_statement(user_ids: list) -> Statement:
    """The users' grants with credits left, by user, each user's in spending order (soonest expiry
    first, none last); only the fields spending needs (see `grants_of`)."""
    user, expires = column(UserCreditSource, "user"), column(UserCreditSource, "expires_at")
    among, params = one_of(user_ids)
    return (
        f"SELECT {user}, {', '.join(column(UserCreditSource, name) for name in _SPENDING_COLUMNS)} "
        f"FROM {table(UserCreditSource)} "
        f"WHERE {user} {among} AND {column(UserCreditSource, 'remaining')} > 0 "
        f"ORDER BY {user}, {expires} IS NULL, {expires}, {column(UserCreditSource, 'created_at')}, "
        f"{column(UserCreditSource, 'id')}",
        params,
    )


def grants_of(rows: list[tuple]) -> dict[int, list[UserCreditSource]]:
    """The rows of `grants_statement` as grants, by user id, in spending order."""
    grants: dict[int, list[UserCreditSource]] = {}
    for row in rows:
        grants.setdefault(row[0], []).append(
            new_row(UserCreditSource, **loaded_values(UserCreditSource, _SPENDING_COLUMNS, row[1:]), user_id=row[0])
        )
    return grants


def holds_live_statement(user_ids: list, now) -> Statement:
    """Credits held by each user's live holds (held and not past their expiry): (user id, credits)
    for the users who have any (see `holds_live_of`)."""
    user = column(CreditHold, "user")
    among, params = one_of(user_ids)
    return (
        f"SELECT {user}, SUM({column(CreditHold, 'amount')}) FROM {table(CreditHold)} "
        f"WHERE {user} {among} AND {column(CreditHold, 'status')} = 'held' "
        f"AND {column(CreditHold, 'expires_at')} > %s GROUP BY {user}",
        [*params, CreditHold._meta.get_field("expires_at").get_db_prep_value(now, default_connection())],
    )


def holds_live_of(rows: list[tuple]) -> dict[int, int]:
    return {user_id: int(held) for user_id, held in rows}


def holds_live_amount(user_id, now) -> int:
    return holds_live_of(read_all([holds_live_statement([user_id], now)])[0]).get(user_id, 0)


_GRANT_COLUMNS = ("id", "source", "remaining", "original_amount", "expires_at")


@cache
def _balance_and_live_grants_statement() -> str:
    balance, grant = table(UserCreditBalance), table(UserCreditSource)
    expires = f"g.{column(UserCreditSource, 'expires_at')}"
    columns = ", ".join(f"g.{column(UserCreditSource, name)}" for name in _GRANT_COLUMNS)
    budget_columns = ", ".join(f"b.{column(UserCreditBalance, name)}" for name in BUDGET_COLUMNS)
    return (
        f"SELECT b.{column(UserCreditBalance, 'amount')}, {budget_columns}, {columns} FROM {balance} b "
        f"LEFT JOIN {grant} g ON g.{column(UserCreditSource, 'user')} = b.{column(UserCreditBalance, 'user')} "
        f"AND g.{column(UserCreditSource, 'remaining')} > 0 AND ({expires} IS NULL OR {expires} > %s) "
        f"WHERE b.{column(UserCreditBalance, 'user')} = %s "
        f"ORDER BY {expires} IS NULL, {expires}, g.{column(UserCreditSource, 'created_at')}, "
        f"g.{column(UserCreditSource, 'id')}"
    )


def balance_and_live_grants(user_id, now) -> tuple[int, list[dict], dict | None]:
    """The stored balance, the unexpired grants with credits left, in spending order, and the
    BUDGET_COLUMNS of the balance row (None without one), in one query (`me/credits/` is the most
    frequent read of the API)."""
    db = default_connection()
    expires_at = UserCreditSource._meta.get_field("expires_at").get_db_prep_value(now, db)
    (rows,) = read_all([(_balance_and_live_grants_statement(), [expires_at, user_id])])
    if not rows:
        return 0, [], None
    first_grant_column = 1 + len(BUDGET_COLUMNS)
    budget = loaded_values(UserCreditBalance, BUDGET_COLUMNS, rows[0][1:first_grant_column])
    grants = [
        loaded_values(UserCreditSource, _GRANT_COLUMNS, row[first_grant_column:])
        for row in rows
        if row[first_grant_column] is not None
    ]
    return rows[0][0], grants, budget
