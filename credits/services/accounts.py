"""The one place a balance is locked and debited.

A `LockedAccount` holds a user's `UserCreditBalance` row FOR UPDATE for the rest of the transaction,
re-reads their grants under that lock, expires the overdue ones, and spends grants soonest-expiring
first. Debits are collected in memory and written by `flush()` in a few bulk statements, so recording
a batch of usage costs the same number of round trips as recording one event.
"""

from datetime import datetime

from auditlog.context import disable_auditlog
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from credits.models import (
    CreditConsumption,
    CreditDeductionLedger,
    DeductionReason,
    UserCreditBalance,
    UserCreditSource,
)
from credits.selectors import SPEND_ORDER


def balance_lock(*, user_id) -> UserCreditBalance | None:
    """The user's balance row, locked until the transaction ends; created on first use.
    None when the user does not exist."""
    locked = UserCreditBalance.objects.select_for_update()
    try:
        return locked.get(user_id=user_id)
    except UserCreditBalance.DoesNotExist:
        if not get_user_model().objects.filter(pk=user_id).exists():
            return None
    try:
        with transaction.atomic():
            UserCreditBalance.objects.create(user_id=user_id)
    except IntegrityError:
        pass  # created by a concurrent first use: lock that row instead
    return locked.get(user_id=user_id)


class LockedAccount:
    """A user's locked balance, their grants with credits left, and the ledger rows to write."""

    def __init__(self, *, balance: UserCreditBalance, now: datetime):
        self.balance = balance
        self.now = now
        self.grants = list(
            UserCreditSource.objects.filter(user_id=balance.user_id, remaining__gt=0).order_by(*SPEND_ORDER)
        )
        self.deductions: list[CreditDeductionLedger] = []
        self.consumptions: list[CreditConsumption] = []
        self._touched: dict[object, UserCreditSource] = {}
        self._expire_overdue()

    @property
    def spendable(self) -> int:
        """Credits that may be spent (holds aside). The balance and its grants agree unless the ledger
        is damaged; then the smaller figure is safe and `verify_ledger` reports the damage."""
        return min(self.balance.amount, sum(grant.remaining for grant in self.grants))

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
            self.consumptions.append(CreditConsumption(deduction=deduction, source=grant, amount=taken))
            left -= taken
        self.balance.amount = before - amount
        self.deductions.append(deduction)
        return deduction

    def flush(self) -> None:
        """Writes the collected rows. The ledger rows are the record of these changes, so the
        per-object history (django-auditlog) is not written for them."""
        if not self.deductions:
            return
        CreditDeductionLedger.objects.bulk_create(self.deductions)
        CreditConsumption.objects.bulk_create(self.consumptions)
        UserCreditSource.objects.bulk_update(list(self._touched.values()), ["remaining", "expired_at", "updated_at"])
        spent = [row for row in self.deductions if row.reason != DeductionReason.EXPIRATION]
        update_fields = ["amount", "updated_at"]
        if spent:
            self.balance.last_deduction_at = self.now
            self.balance.last_deduction_amount = spent[-1].amount
            update_fields += ["last_deduction_at", "last_deduction_amount"]
        with disable_auditlog():
            self.balance.save(update_fields=update_fields)
        self.deductions, self.consumptions, self._touched = [], [], {}
