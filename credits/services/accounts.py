"""The one place a balance is locked and debited.

A `LockedAccount` holds a user's `UserCreditBalance` row FOR UPDATE for the rest of the transaction,
re-reads their grants under that lock, expires the overdue ones, and spends grants soonest-expiring
first. Debits are collected in memory and written by `flush()` in one statement (see
credits.ledger_sql), so recording a batch of usage costs the same round trips as recording one event.
"""

from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from credits import ledger_sql
from credits.models import (
    CreditConsumption,
    CreditDeductionLedger,
    DeductionReason,
    UserCreditBalance,
    UserCreditSource,
)
from credits.selectors import balance_invalidate, spendable


def balance_lock(*, user_id) -> UserCreditBalance | None:
    """The user's balance row, locked until the transaction ends; created on first use.
    None when the user does not exist."""
    locked = UserCreditBalance.objects.select_for_update()
    # Callers lock to change the balance or its grants: the cached balance goes when they commit.
    balance_invalidate(user_id=user_id)
    try:
        return locked.get(user_id=user_id)
    except UserCreditBalance.DoesNotExist:
        if not _balance_create(user_id):
            return None
    return locked.get(user_id=user_id)


def _balance_create(user_id) -> bool:
    """Creates the balance row of an existing user (False if there is no such user)."""
    if not get_user_model().objects.filter(pk=user_id).exists():
        return False
    try:
        with transaction.atomic():
            UserCreditBalance.objects.create(user_id=user_id)
    except IntegrityError:
        pass  # created by a concurrent first use: that row is the one to lock
    return True


class LockedAccount:
    """A user's locked balance, their grants with credits left, and the ledger rows to write."""

    def __init__(self, *, balance: UserCreditBalance, grants: list[UserCreditSource], now: datetime):
        self.balance = balance
        self.now = now
        self.grants = grants
        self.deductions: list[CreditDeductionLedger] = []
        self.consumptions: list[CreditConsumption] = []
        self._touched: dict[object, UserCreditSource] = {}
        self._expire_overdue()

    @classmethod
    def open(cls, *, user_id, now: datetime) -> "LockedAccount | None":
        """Locks the user's balance (creating it on first use); None when the user does not exist."""
        opened = cls.open_reading(user_id=user_id, now=now, reads=[])
        return None if opened is None else opened[0]

    @classmethod
    def open_reading(
        cls, *, user_id, now: datetime, reads: list[ledger_sql.Statement]
    ) -> "tuple[LockedAccount, list[list[tuple]]] | None":
        """Like `open`, and runs the `reads` statements after the lock, in the same round trip: the
        account and the rows of each read."""
        statements = [ledger_sql.balance_lock_statement(user_id), ledger_sql.grants_statement(user_id), *reads]
        locked, grants, *results = ledger_sql.read_all(statements)
        if not locked:
            if not _balance_create(user_id):
                return None
            # The reads ran without the lock: read again, under it.
            locked, grants, *results = ledger_sql.read_all(statements)
        ((balance_id, amount),) = locked
        balance = UserCreditBalance(
            id=ledger_sql.from_db(UserCreditBalance, "id", balance_id), user_id=user_id, amount=amount
        )
        return cls(balance=balance, grants=ledger_sql.grants_of(user_id, grants), now=now), results

    @property
    def spendable(self) -> int:
        return spendable(self.balance.amount, (grant.remaining for grant in self.grants))

    def _expire_overdue(self) -> None:
        overdue = [grant for grant in self.grants if grant.expires_at is not None and grant.expires_at <= self.now]
        for grant in overdue:
            self._write_deduction(amount=grant.remaining, reason=DeductionReason.EXPIRATION, paid_by=[grant])
            grant.expired_at = self.now
        self.grants = [grant for grant in self.grants if grant.remaining > 0]

    def debit(self, amount: int, *, reason: str, **ledger_fields) -> CreditDeductionLedger:
        """Takes `amount` credits from the grants, soonest-expiring first. The caller has checked
        that `amount <= spendable`."""
        paid_by = []
        left = amount
        for grant in self.grants:
            if left == 0:
                break
            if grant.remaining:
                paid_by.append(grant)
                left -= min(left, grant.remaining)
        if left:
            raise ValueError(f"debit of {amount} exceeds the spendable {self.spendable}")
        return self._write_deduction(amount=amount, reason=reason, paid_by=paid_by, **ledger_fields)

    def take_grants(self, grant_ids: set, *, reason: str, **ledger_fields) -> CreditDeductionLedger | None:
        """Takes everything left of the given grants (credits given for something since taken back):
        one ledger row, or None when nothing is left of them. Credits already spent stay spent."""
        taken = [grant for grant in self.grants if grant.pk in grant_ids and grant.remaining]
        amount = sum(grant.remaining for grant in taken)
        if not amount:
            return None
        return self._write_deduction(amount=amount, reason=reason, paid_by=taken, **ledger_fields)

    def _write_deduction(self, *, amount: int, reason: str, paid_by, **ledger_fields) -> CreditDeductionLedger:
        before = self.balance.amount
        deduction = CreditDeductionLedger(
            user_id=self.balance.user_id,
            amount=amount,
            balance_before=before,
            balance_after=before - amount,
            reason=reason,
            **ledger_fields,
        )
        left = amount
        for grant in paid_by:
            taken = min(left, grant.remaining)
            grant.remaining -= taken
            grant.updated_at = self.now
            self._touched[grant.pk] = grant
            self.consumptions.append(CreditConsumption(deduction=deduction, source_id=grant.pk, amount=taken))
            left -= taken
        self.balance.amount = before - amount
        self.deductions.append(deduction)
        return deduction

    def statements(self) -> list[tuple[str, list]]:
        """The writes of the collected rows. The ledger rows are the record of these changes, so the
        per-object history (django-auditlog) is not written for balances and grants here."""
        if not self.deductions:
            return []
        balance_invalidate(user_id=self.balance.user_id)
        writes = [ledger_sql.insert(self.deductions), ledger_sql.insert(self.consumptions)]
        writes += [
            ledger_sql.update(grant, ["remaining", "expired_at", "updated_at"]) for grant in self._touched.values()
        ]
        self.balance.updated_at = self.now
        fields = ["amount", "updated_at"]
        spent = [row for row in self.deductions if row.reason != DeductionReason.EXPIRATION]
        if spent:
            self.balance.last_deduction_at = self.now
            self.balance.last_deduction_amount = spent[-1].amount
            fields += ["last_deduction_at", "last_deduction_amount"]
        writes.append(ledger_sql.update(self.balance, fields))
        self.deductions, self.consumptions, self._touched = [], [], {}
        return writes

    def flush(self) -> None:
        ledger_sql.execute_all(self.statements())
