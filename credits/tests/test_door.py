"""One door to every balance: each operation changes the balance through LockedAccount, whose flush
writes the balance row and the operation's ledger rows together, in the operation's transaction;
nothing else in the code writes a balance."""

import ast
import os
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing_project.appends import appends_deferred
from credits.api.events import usage_event_parse
from credits.models import CreditDeductionLedger, UserCreditBalance, UserCreditSource
from credits.services import (
    account_tier_set,
    budget_set,
    credit_grant,
    credits_expire_for_user,
    deduction_reverse,
    hold_release,
    hold_reserve,
    usage_record,
)
from credits.services.accounts import LockedAccount
from credits.services.ledger import ledger_figures, ledger_repair
from credits.tests.conftest import fund, usage_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]

WRITE = re.compile(r'\b(?:INSERT INTO|UPDATE|DELETE FROM)\s+"?credits_(\w+)"?', re.IGNORECASE)
BALANCE = "usercreditbalance"
SPENT = {BALANCE, "creditdeductionledger", "creditconsumption", "usercreditsource"}


class DoorSpy:
    """Which credits tables each flush of a LockedAccount wrote, and any credits write made outside one."""

    def __init__(self):
        self.flushes: list[set[str]] = []
        self.outside: list[str] = []
        self.in_transaction: list[bool] = []
        self._current: set[str] | None = None

    def __call__(self, execute, sql, params, many, context):
        tables = {table.lower() for table in WRITE.findall(sql)}
        if tables and self._current is not None:
            self._current |= tables
        elif tables:
            self.outside.append(sql)
        return execute(sql, params, many, context)

    def flush(self, account, **options):
        self._current = set()
        self.in_transaction.append(connection.in_atomic_block)
        try:
            FLUSH(account, **options)
        finally:
            self.flushes.append(self._current)
            self._current = None


FLUSH = LockedAccount.flush


@pytest.fixture
def door(monkeypatch):
    spy = DoorSpy()
    monkeypatch.setattr(LockedAccount, "flush", lambda account, **options: spy.flush(account, **options))
    with connection.execute_wrapper(spy):
        yield spy


def parsed(user, **overrides):
    return usage_event_parse(usage_event(user, **overrides))[0]


def _debit(user, staff):
    return lambda: usage_record(event=parsed(user))


def _hold(user, staff):
    return lambda: hold_reserve(user_id=user.pk, estimated_credits=100)


def _capture(user, staff):
    hold = hold_reserve(user_id=user.pk, estimated_credits=100).hold
    return lambda: usage_record(event=parsed(user, hold_id=str(hold.hold_id)))


def _release(user, staff):
    hold = hold_reserve(user_id=user.pk, estimated_credits=100).hold
    return lambda: hold_release(hold_id=hold.hold_id)


def _grant(user, staff):
    return lambda: credit_grant(user=user, amount=500, source="bonus", reason="goodwill")


def _reversal(user, staff):
    deduction = usage_record(event=parsed(user)).usage.deduction
    return lambda: deduction_reverse(deduction_id=deduction.pk, reason="refund", actor=staff)


def _expiry(user, staff):
    fund(user, 30, expires_at=timezone.now() + timedelta(minutes=1))
    return lambda: credits_expire_for_user(user_id=user.pk, now=timezone.now() + timedelta(minutes=2))


def _repair(user, staff):
    # damaged on purpose, as only a bug or a hand-made SQL change could
    UserCreditSource.objects.filter(user=user).update(remaining=1)
    UserCreditBalance.objects.filter(user=user).update(amount=7)
    return lambda: ledger_repair(user_id=user.pk, actor=staff)


def _tier(user, staff):
    return lambda: account_tier_set(user_id=user.pk, tier="pro", subscription_id=uuid.uuid4())


def _budget(user, staff):
    return lambda: budget_set(user_id=user.pk, monthly_credits=5000, hard_limit=True)


# operation: (set-up returning the operation, the tables its one flush writes)
OPERATIONS = {
    "debit": (_debit, SPENT | {"tokenusageledger"}),
    "hold": (_hold, {"credithold"}),
    "capture": (_capture, SPENT | {"tokenusageledger", "credithold"}),
    "release": (_release, {"credithold"}),
    "grant": (_grant, {BALANCE, "creditallocation", "usercreditsource"}),
    "reversal": (_reversal, {BALANCE, "creditdeductionledger", "usercreditsource"}),
    "expiry": (_expiry, SPENT),
    "repair": (_repair, {BALANCE, "usercreditsource"}),
    "tier": (_tier, {BALANCE}),
    "budget": (_budget, {BALANCE}),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_each_operation_writes_the_balance_and_its_ledger_rows_in_one_flush_of_the_door(
    request, user, staff_user, operation
):
    setup, tables = OPERATIONS[operation]
    fund(user, 1000)
    run = setup(user, staff_user)
    door = request.getfixturevalue("door")

    run()

    written = [flush for flush in door.flushes if flush]
    assert door.outside == []
    assert written == [tables]
    assert all(door.in_transaction)


def test_the_door_keeps_the_ledger_identity_through_every_operation(user, staff_user):
    fund(user, 1000)
    for setup, _ in OPERATIONS.values():
        setup(user, staff_user)()

    (figures,) = ledger_figures(user_ids=[user.pk])
    assert figures.problems == []
    assert CreditDeductionLedger.objects.filter(user=user, reason="reversal").count() == 1


# What the code may do to the balance table outside the door, checked in the source.
DOOR_MODULES = {"credits/services/accounts.py", "credits/ledger_sql.py"}
ORM_WRITES = {"save", "update", "create", "bulk_create", "bulk_update", "get_or_create", "update_or_create", "delete"}
TABLE = UserCreditBalance._meta.db_table


SKIPPED_DIRECTORIES = {".venv", ".git", "node_modules", "tests", "migrations", "staticfiles"}


def project_sources():
    root = Path(settings.BASE_DIR)
    for directory, subdirectories, files in os.walk(root):
        # Tests set up and damage balances on purpose; migrations build and fill the table.
        subdirectories[:] = [name for name in subdirectories if name not in SKIPPED_DIRECTORIES]
        for name in files:
            relative = (Path(directory) / name).relative_to(root).as_posix()
            if name.endswith(".py") and relative not in DOOR_MODULES:
                yield relative, ast.parse((root / relative).read_text(), filename=relative)


@pytest.mark.postgres
def test_a_grant_in_a_webhooks_block_is_written_with_the_next_statement_which_sees_it(user):
    fund(user, 1000)
    with transaction.atomic(), appends_deferred():
        granting, reading = DoorSpy(), DoorSpy()  # each inside the block's own execute wrapper
        with connection.execute_wrapper(granting):
            result = credit_grant(user=user, amount=500, source="bonus", reason="goodwill")
        with connection.execute_wrapper(reading):
            balance = UserCreditBalance.objects.get(user=user).amount

    assert granting.outside == []
    assert {table.lower() for sql in reading.outside for table in WRITE.findall(sql)} == {
        BALANCE,
        "creditallocation",
        "usercreditsource",
    }
    assert balance == result.balance_after == 1500
    (figures,) = ledger_figures(user_ids=[user.pk])
    assert figures.problems == []


def test_no_code_outside_the_door_writes_a_balance():
    found = []
    for relative, tree in project_sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ORM_WRITES
                and "UserCreditBalance" in ast.dump(node.func.value)
            ):
                found.append(f"{relative}:{node.lineno} {ast.unparse(node)[:80]}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and TABLE in node.value:
                found.append(f"{relative}:{node.lineno} SQL naming {TABLE}")

    assert found == []
    assert len(list(project_sources())) > 100  # the walk did reach the code
