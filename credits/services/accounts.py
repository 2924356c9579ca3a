"""The one door to a balance.

Every change of a user's credits goes through a `LockedAccount`: a debit for usage, a hold and its
capture or release, a grant, a reversal, the expiry of grants, a repair from the ledger, and the tier
that subscriptions pushes down (`account_tier_set`). Opening one locks the user's `UserCreditBalance`
row FOR UPDATE for the rest of the transaction and re-reads, under that lock, their grants with
credits left and the credits their live holds reserve; grants past their expiry are expired on the
way in. Each operation changes the account in memory and collects its rows; `flush()` writes them
all, with the balance row, in one statement on PostgreSQL (credits.ledger_sql), so recording a batch
of usage costs the same round trips as recording one event. Nothing else writes a balance
(credits/tests/test_door.py checks the code and every service path).

The ledger rows are the history of balances and grants: they are not tracked by django-auditlog
(see credits.apps), and staff actions on them also write an AdminAuditLog row.
"""

from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone

from credits import ledger_sql
from credits.models import (
    CreditAllocation,
    CreditConsumption,
    CreditDeductionLedger,
    CreditHold,
    DeductionReason,
    GrantSource,
    HoldStatus,
    TokenUsageLedger,
    UserCreditBalance,
    UserCreditSource,
)
from credits.selectors import balance_invalidate, spendable

TIER_FIELDS = {"tier", "subscription_id"}
LAST_DEDUCTION_FIELDS = ("last_deduction_at", "last_deduction_amount")


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
    """A user's locked balance, their grants with credits left, the credits their live holds reserve,
    and the rows a change writes."""

    def __init__(
        self,
        *,
        balance: UserCreditBalance,
        grants: list[UserCreditSource],
        held: int,
        now: datetime,
        expire_overdue: bool = True,
    ):
        self.balance = balance
        self.grants = grants
        self.held = held
        self.now = now
        self._balance_fields: set[str] = set()
        # Rows to insert, by table, in an order that satisfies their foreign keys.
        self.allocations: list[CreditAllocation] = []
        self.new_grants: list[UserCreditSource] = []
        self.deductions: list[CreditDeductionLedger] = []
        self.consumptions: list[CreditConsumption] = []
        self.new_holds: list[CreditHold] = []
        self.usage: list[TokenUsageLedger] = []
        # Existing rows to update: (model, pk) -> (row, fields).
        self._updates: dict[tuple, tuple[Model, set[str]]] = {}
        if expire_overdue:
            self._expire_overdue()

    @classmethod
    def open(cls, *, user_id, now: datetime, expire_overdue: bool = True) -> "LockedAccount | None":
        """Locks the user's balance (creating it on first use); None when the user does not exist.
        Operations that spend (debits, holds) and the expiry job expire the grants past their expiry
        first; the others pass `expire_overdue=False` and leave that to them."""
        opened = cls.open_reading(user_id=user_id, now=now, reads=[], expire_overdue=expire_overdue)
        return None if opened is None else opened[0]

    @classmethod
    def open_reading(
        cls, *, user_id, now: datetime, reads: list[ledger_sql.Statement], expire_overdue: bool = True
    ) -> "tuple[LockedAccount, list[list[tuple]]] | None":
        """Like `open`, and runs the `reads` statements after the lock, in the same round trip: the
        account and the rows of each read."""
        statements = [
            ledger_sql.balance_lock_statement(user_id),
            ledger_sql.grants_statement(user_id),
            ledger_sql.holds_live_statement(user_id, now),
            *reads,
        ]
        locked, grants, held, *results = ledger_sql.read_all(statements)
        if not locked:
            if not _balance_create(user_id):
                return None
            # The reads ran without the lock: read again, under it.
            locked, grants, held, *results = ledger_sql.read_all(statements)
        account = cls(
            balance=ledger_sql.balance_of(user_id, locked[0]),
            grants=ledger_sql.grants_of(user_id, grants),
            held=int(held[0][0]),
            now=now,
            expire_overdue=expire_overdue,
        )
        return account, results

    @property
    def user_id(self):
        return self.balance.user_id

    @property
    def spendable(self) -> int:
        """Credits the grants hold, holds aside."""
        return spendable(self.balance.amount, (grant.remaining for grant in self.grants))

    @property
    def available(self) -> int:
        """Credits that may be spent or held now: spendable minus live holds."""
        return max(self.spendable - self.held, 0)

    # Debits and grant expiry

    def _expire_overdue(self) -> None:
        overdue = [grant for grant in self.grants if grant.expires_at is not None and grant.expires_at <= self.now]
        for grant in overdue:
            self._write_deduction(amount=grant.remaining, reason=DeductionReason.EXPIRATION, paid_by=[grant])
            grant.expired_at = self.now
            self._update(grant, "expired_at")
        self.grants = [grant for grant in self.grants if grant.remaining > 0]

    def debit(self, amount: int, *, reason: str, **ledger_fields) -> CreditDeductionLedger:
        """Takes `amount` credits from the grants, soonest-expiring first. The caller has checked
        that `amount` is available."""
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
        deduction = self._write_deduction(amount=amount, reason=reason, paid_by=paid_by, **ledger_fields)
        self.balance.last_deduction_at = self.now
        self.balance.last_deduction_amount = amount
        self._balance_fields.update(LAST_DEDUCTION_FIELDS)
        return deduction

    def take_grants(
        self, grant_ids: set, *, reason: str, limit: int | None = None, **ledger_fields
    ) -> CreditDeductionLedger | None:
        """Takes what is left of the given grants (credits given for something since taken back), at
        most `limit` credits when given, but never the credits live holds reserve: at most what is
        available, so a request in flight is still charged and `available` never goes below zero. One
        ledger row, or None when nothing can be taken. Credits already spent stay spent."""
        taken = [grant for grant in self.grants if grant.pk in grant_ids and grant.remaining]
        amount = min(sum(grant.remaining for grant in taken), self.available)
        if limit is not None:
            amount = min(amount, max(limit, 0))
        if not amount:
            return None
        return self._write_deduction(amount=amount, reason=reason, paid_by=taken, **ledger_fields)

    def _write_deduction(self, *, amount: int, reason: str, paid_by, **ledger_fields) -> CreditDeductionLedger:
        before = self.balance.amount
        deduction = CreditDeductionLedger(
            user_id=self.user_id,
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
            self._update(grant, "remaining")
            self.consumptions.append(CreditConsumption(deduction=deduction, source_id=grant.pk, amount=taken))
            left -= taken
        self._amount_set(before - amount)
        self.deductions.append(deduction)
        return deduction

    # Credits in

    def grant(self, allocation: CreditAllocation) -> UserCreditSource:
        """Adds an allocation's credits: the allocation row, its grant and the balance."""
        self.allocations.append(allocation)
        return self._add_grant(
            amount=allocation.amount,
            source=allocation.source,
            expires_at=allocation.expires_at,
            allocation=allocation,
        )

    def reverse(
        self, deduction: CreditDeductionLedger, *, reason: str, actor_id=None, expires_at: datetime | None = None
    ) -> tuple[CreditDeductionLedger, UserCreditSource]:
        """Gives back a deduction's credits: a new `reversal` ledger row (the original is never edited)
        and a new grant. The caller has checked that the deduction may be reversed."""
        before = self.balance.amount
        reversal = CreditDeductionLedger(
            user_id=self.user_id,
            subscription_id=deduction.subscription_id,
            amount=deduction.amount,
            balance_before=before,
            balance_after=before + deduction.amount,
            reason=DeductionReason.REVERSAL,
            reverses=deduction,
            reversed_at=self.now,
            reversed_by_id=actor_id,
            reversal_reason=reason,
        )
        self.deductions.append(reversal)
        grant = self._add_grant(
            amount=deduction.amount, source=GrantSource.REVERSAL, expires_at=expires_at, reversal_of=deduction
        )
        return reversal, grant

    def _add_grant(self, *, amount: int, source: str, expires_at, **origin) -> UserCreditSource:
        grant = UserCreditSource(
            user_id=self.user_id,
            source=source,
            original_amount=amount,
            remaining=amount,
            expires_at=expires_at,
            **origin,
        )
        self.new_grants.append(grant)
        self._amount_set(self.balance.amount + amount)
        if expires_at is None or expires_at > self.now:
            # Spendable at once, in spending order (soonest expiry first, never-expiring last).
            self.grants = sorted(
                [*self.grants, grant], key=lambda each: (each.expires_at is None, each.expires_at or self.now)
            )
        return grant

    # Holds

    def hold(self, amount: int, *, hold_id, expires_at: datetime) -> CreditHold:
        """Reserves `amount` credits. The caller has checked that they are available."""
        hold = CreditHold(user_id=self.user_id, hold_id=hold_id, amount=amount, expires_at=expires_at)
        self.new_holds.append(hold)
        self.held += amount
        return hold

    def hold_is_live(self, hold: CreditHold) -> bool:
        return hold.status == HoldStatus.HELD and hold.expires_at > self.now

    def capture(self, hold: CreditHold, *, charged: int, request_id) -> None:
        """Marks a hold as spent by the request that `charged` its credits (debited apart)."""
        if self.hold_is_live(hold):
            self.held -= hold.amount
        hold.status = HoldStatus.CAPTURED
        hold.captured_amount = charged
        hold.request_id = request_id
        self._update(hold, "status", "captured_amount", "request_id")

    def release(self, hold: CreditHold) -> None:
        """Frees a held hold: released, or expired if its time has passed."""
        if hold.status != HoldStatus.HELD:
            return
        if self.hold_is_live(hold):
            self.held -= hold.amount
        hold.status = HoldStatus.EXPIRED if hold.expires_at <= self.now else HoldStatus.RELEASED
        self._update(hold, "status")

    # Usage rows, the tier, repairs

    def usage_add(self, usage: TokenUsageLedger) -> None:
        """A usage row, written with the deduction that charged it."""
        self.usage.append(usage)

    def tier_set(self, *, tier: str, subscription_id) -> None:
        """The tier usage is priced at and the live subscription usage rows name."""
        if (self.balance.tier, self.balance.subscription_id) != (tier, subscription_id):
            self.balance.tier, self.balance.subscription_id = tier, subscription_id
            self._balance_fields |= {"tier", "subscription_id"}

    def repair(self, *, balance: int, grant_remainders: dict) -> None:
        """Sets the balance and the given grants' remainders (grant id -> credits) to what the ledger
        says; opened with `expire_overdue=False`, so nothing else changes."""
        for grant_id, remaining in grant_remainders.items():
            self._update(UserCreditSource(pk=grant_id, remaining=remaining), "remaining")
        self._amount_set(balance)

    # The write path

    def _amount_set(self, amount: int) -> None:
        self.balance.amount = amount
        self._balance_fields.add("amount")

    def _update(self, row: Model, *fields: str) -> None:
        if (self.new_grants or self.new_holds) and any(row is new for new in (*self.new_grants, *self.new_holds)):
            return  # not written yet: its insert carries the new values
        _, known = self._updates.setdefault((type(row), row.pk), (row, set()))
        known.update(fields)

    def statements(self) -> list[ledger_sql.Statement]:
        """The writes of everything collected since the last call, the balance row last."""
        inserted = [
            rows
            for rows in (
                self.allocations,
                self.new_grants,
                self.deductions,
                self.consumptions,
                self.new_holds,
                self.usage,
            )
            if rows
        ]
        writes = [ledger_sql.insert(rows) for rows in inserted]
        for row in (row for rows in inserted for row in rows):
            row._state.adding, row._state.db = False, DEFAULT_DB_ALIAS
        for row, fields in self._updates.values():
            row.updated_at = self.now
            writes.append(ledger_sql.update(row, sorted(fields | {"updated_at"})))
        if writes or self._balance_fields - TIER_FIELDS:
            # What `me/credits/` shows changes: its cached copy goes when this commits.
            balance_invalidate(user_id=self.user_id)
        if self._balance_fields:
            self.balance.updated_at = self.now
            writes.append(ledger_sql.update(self.balance, sorted(self._balance_fields | {"updated_at"})))
        self._balance_fields = set()
        self.allocations, self.new_grants, self.deductions, self.consumptions = [], [], [], []
        self.new_holds, self.usage, self._updates = [], [], {}
        return writes

    def flush(self) -> None:
        ledger_sql.execute_all(self.statements())


@transaction.atomic
def account_tier_set(*, user_id, tier: str, subscription_id) -> None:
    """Records the tier a user's usage is priced at and their live subscription (None: none).
    Subscriptions calls it in its own transaction whenever a user's entitlements change, so the
    next usage record reads them from the balance row it locks, without asking subscriptions."""
    account = LockedAccount.open(user_id=user_id, now=timezone.now(), expire_overdue=False)
    if account is None:
        return  # no such user: nothing to price
    account.tier_set(tier=tier, subscription_id=subscription_id)
    account.flush()
