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

The same lock guards the user's monthly budget (credits.budgets), counted on the balance row by every
usage debit, and the low-balance, depleted and budget-threshold notifications, whose "already told"
marks live on that row too: a debit that crosses a threshold notifies once, in the debit's transaction
(a refused request writes nothing, so it notifies nothing).

The ledger rows are the history of balances and grants: they are not tracked by django-auditlog
(see credits.apps), and staff actions on them also write an AdminAuditLog row.
"""

from collections import defaultdict
from datetime import datetime
from functools import cached_property
from itertools import chain

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone

from billing_project import sql
from billing_project.appends import write_ahead
from credits import ledger_sql
from credits.budgets import Budget, month_key, thresholds_crossed
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
from credits.selectors import balances_invalidate, spendable
from credits.services.alerts import Alert, alerts_send

# Balance fields `me/credits/` does not show: changing them keeps its cached copy.
UNSHOWN_BALANCE_FIELDS = {"tier", "subscription_id", "auto_recharge_below"}
LAST_DEDUCTION_FIELDS = ("last_deduction_at", "last_deduction_amount")
BUDGET_COUNT_FIELDS = ("budget_month", "budget_spent", "budget_notified_percent")
ALERT_FIELDS = ("balance_alerts_armed_by", "low_balance_notified", "depleted_notified")
# The deductions a budget counts: spending on usage (not expiry, claw-backs or repairs).
SPENDING_REASONS = {DeductionReason.INFERENCE, DeductionReason.EMBEDDING}


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
        self._recharge_due = False
        self._spent = False  # a debit happened since the last flush: thresholds may have been crossed
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
        cls, *, user_id, now: datetime, reads: list[sql.Statement], expire_overdue: bool = True
    ) -> "tuple[LockedAccount, list[list[tuple]]] | None":
        """Like `open`, and runs the `reads` statements after the lock, in the same round trip: the
        account and the rows of each read."""
        accounts, results = cls.open_many_reading(
            user_ids=[user_id], now=now, reads=reads, expire_overdue=expire_overdue
        )
        if not accounts:
            if not _balance_create(user_id):
                return None
            # The reads ran without the lock: read again, under it.
            accounts, results = cls.open_many_reading(
                user_ids=[user_id], now=now, reads=reads, expire_overdue=expire_overdue
            )
        (account,) = accounts.values()
        return account, results

    @classmethod
    def open_many_reading(
        cls,
        *,
        user_ids: list,
        now: datetime,
        reads: list[sql.Statement],
        expire_overdue: bool = True,
        skip_locked: bool = False,
    ) -> "tuple[dict[int, LockedAccount], list[list[tuple]]]":
        """The accounts of those users who have a balance row (none is created here), by user id,
        their rows locked in ascending user id by one statement (the lock order), and the rows of
        each of `reads`, run after the lock in the same round trip. `skip_locked`: the users whose
        row another transaction holds are left out, as if they had none, instead of waited for."""
        locked, grants, held, *results = sql.read_all(
            [
                ledger_sql.balances_lock_statement(sorted(user_ids), skip_locked=skip_locked),
                ledger_sql.grants_statement(user_ids),
                ledger_sql.holds_live_statement(user_ids, now),
                *reads,
            ]
        )
        grants_by_user, held_by_user = ledger_sql.grants_of(grants), ledger_sql.holds_live_of(held)
        accounts = {}
        for row in locked:
            balance = ledger_sql.balance_of(row)
            accounts[balance.user_id] = cls(
                balance=balance,
                grants=grants_by_user.get(balance.user_id, []),
                held=held_by_user.get(balance.user_id, 0),
                now=now,
                expire_overdue=expire_overdue,
            )
        return accounts, results

    @property
    def user_id(self):
        return self.balance.user_id

    @cached_property
    def month(self) -> str:
        """The budget month of `now` (credits.budgets.month_key), worked out once: each debit and the
        budget ask."""
        return month_key(self.now)

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
        below = self.balance.auto_recharge_below
        if below is not None and self.spendable < below:
            self._recharge_due = True
        self.balance.last_deduction_at = self.now
        self.balance.last_deduction_amount = amount
        self._balance_fields.update(LAST_DEDUCTION_FIELDS)
        if reason in SPENDING_REASONS:
            self._budget_count(amount)
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
        deduction = sql.new_row(
            CreditDeductionLedger,
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
            self.consumptions.append(
                sql.new_row(CreditConsumption, deduction=deduction, source_id=grant.pk, amount=taken)
            )
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
        balance = self.balance
        deducted_this_month = month_key(deduction.created_at) == balance.budget_month == self.month
        if deduction.reason in SPENDING_REASONS and deducted_this_month:
            # Only this month's spend comes back to this month's budget (credits.budgets).
            balance.budget_spent = max(balance.budget_spent - deduction.amount, 0)
            self._balance_fields.update(BUDGET_COUNT_FIELDS)
        grant = self._add_grant(
            amount=deduction.amount, source=GrantSource.REVERSAL, expires_at=expires_at, reversal_of=deduction
        )
        return reversal, grant

    def _add_grant(self, *, amount: int, source: str, expires_at, **origin) -> UserCreditSource:
        grant = sql.new_row(
            UserCreditSource,
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
            self._alerts_rearm(grant)
        return grant

    # The monthly budget and the notifications of spending

    @property
    def budget(self) -> Budget:
        balance = self.balance
        return Budget.of(
            monthly_credits=balance.budget_monthly_credits,
            hard_limit=balance.budget_hard_limit,
            month=balance.budget_month,
            spent=balance.budget_spent,
            notified_percent=balance.budget_notified_percent,
            this_month=self.month,
        )

    def budget_available(self, *, freed: int = 0) -> int | None:
        """Credits a hard budget still lets be spent or held this month, live holds (but the `freed`
        credits of the hold being captured) counted as spent; None when no hard limit applies."""
        if not self.balance.budget_hard_limit:
            return None  # the common case, asked once per event: no arithmetic
        return self.budget.available(held=self.held - freed)

    def budget_set(self, *, monthly_credits: int | None, hard_limit: bool) -> None:
        """The user's monthly budget (None: none) and whether it refuses usage past it. The month's
        spend and the thresholds already notified stay as they are."""
        self.balance.budget_monthly_credits = monthly_credits
        self.balance.budget_hard_limit = hard_limit
        self._balance_fields |= {"budget_monthly_credits", "budget_hard_limit"}

    def budget_recount(self, *, spent: int) -> None:
        """Starts this month's count at `spent` (read from the ledger) on a row that has not counted
        this month yet: one whose usage predates budgets."""
        balance = self.balance
        balance.budget_month, balance.budget_spent, balance.budget_notified_percent = self.month, spent, 0
        self._balance_fields.update(BUDGET_COUNT_FIELDS)

    def _budget_count(self, amount: int) -> None:
        balance = self.balance
        month = self.month
        if balance.budget_month != month:
            balance.budget_month, balance.budget_spent, balance.budget_notified_percent = month, 0, 0
        balance.budget_spent += amount
        self._balance_fields.update(BUDGET_COUNT_FIELDS)
        self._spent = True

    def _alerts_rearm(self, grant: UserCreditSource) -> None:
        """A grant that brings the balance back up makes the next fall notify again, as a new occurrence."""
        balance = self.balance
        rearm_low = balance.low_balance_notified and self.spendable >= settings.CREDITS_LOW_BALANCE_THRESHOLD
        rearm_depleted = balance.depleted_notified and self.spendable > 0
        if rearm_low or rearm_depleted:
            balance.low_balance_notified = balance.low_balance_notified and not rearm_low
            balance.depleted_notified = balance.depleted_notified and not rearm_depleted
            balance.balance_alerts_armed_by = grant.pk
            self._balance_fields.update(ALERT_FIELDS)

    def _alerts_due(self) -> list[Alert]:
        """What the debits since the last flush crossed, each marked on the balance row (written with
        it under the lock, so concurrent requests cannot both notify)."""
        balance, alerts = self.balance, []
        budget = self.budget
        if budget.monthly_credits:
            crossed = thresholds_crossed(
                monthly_credits=budget.monthly_credits,
                spent=budget.spent_this_month,
                notified_percent=budget.notified_percent,
            )
            alerts += [
                Alert.budget_threshold(user_id=self.user_id, month=balance.budget_month, budget=budget, percent=each)
                for each in crossed
            ]
            if crossed:
                balance.budget_notified_percent = crossed[-1]
                self._balance_fields.update(BUDGET_COUNT_FIELDS)
        spendable = self.spendable
        threshold = settings.CREDITS_LOW_BALANCE_THRESHOLD
        armed_by = balance.balance_alerts_armed_by
        if spendable == 0 and not balance.depleted_notified:
            alerts.append(Alert.balance_depleted(user_id=self.user_id, armed_by=armed_by))
            # Nothing lower is left to warn about until a grant re-arms both.
            balance.depleted_notified = balance.low_balance_notified = True
            self._balance_fields.update(ALERT_FIELDS)
        elif spendable < threshold and not balance.low_balance_notified:
            alerts.append(
                Alert.balance_low(user_id=self.user_id, armed_by=armed_by, balance=spendable, threshold=threshold)
            )
            balance.low_balance_notified = True
            self._balance_fields.update(ALERT_FIELDS)
        return alerts

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

    def auto_recharge_arm(self, threshold: int | None) -> None:
        """The auto-recharge threshold deductions compare with (None: auto-recharge is off or paused)."""
        if self.balance.auto_recharge_below != threshold:
            self.balance.auto_recharge_below = threshold
            self._balance_fields.add("auto_recharge_below")

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

    def _alerts_taken(self) -> list[Alert]:
        """The alerts the debits since the last flush made due (marked on the balance row)."""
        alerts = self._alerts_due() if self._spent else []
        self._spent = False
        return alerts

    def _rows_taken(self) -> tuple[list[list[Model]], list[tuple[Model, tuple[str, ...]]], bool]:
        """The rows collected since the last call: to insert, by table (in an order that satisfies
        their foreign keys), and to update, each with its changed fields (the balance row last);
        and whether what `me/credits/` shows changes. Registers the recharge that follows their commit."""
        inserted = [
            self.allocations,
            self.new_grants,
            self.deductions,
            self.consumptions,
            self.new_holds,
            self.usage,
        ]
        updated = []
        for row, fields in self._updates.values():
            row.updated_at = self.now
            updated.append((row, tuple(sorted(fields | {"updated_at"}))))
        shown_changed = bool(any(inserted) or updated or self._balance_fields - UNSHOWN_BALANCE_FIELDS)
        if self._recharge_due:
            self._recharge_due = False
            # After commit, outside the request's transaction: the recharge itself runs in a task.
            transaction.on_commit(lambda user_id=self.user_id: recharge_queue(user_id=user_id), robust=True)
        if self._balance_fields:
            self.balance.updated_at = self.now
            updated.append((self.balance, tuple(sorted(self._balance_fields | {"updated_at"}))))
        self._balance_fields = set()
        self.allocations, self.new_grants, self.deductions, self.consumptions = [], [], [], []
        self.new_holds, self.usage, self._updates = [], [], {}
        return inserted, updated, shown_changed

    def flush(self, *, commit: bool = False, ahead: bool = False) -> None:
        accounts_flush([self], commit=commit, ahead=ahead)


def accounts_flush(accounts: list[LockedAccount], *, commit: bool = False, ahead: bool = False) -> None:
    """Writes what the accounts collected, with their balance rows; on PostgreSQL in one statement,
    where each table's new rows are one INSERT and the rows changed alike (same table, same fields)
    one UPDATE, so a batch over a hundred users costs the round trip of one. Then sends the alerts
    that became due. `commit`: the caller's transaction ends with this call; the statement carries
    its COMMIT where it may (sql.commit_carried), unless alerts are due: they write after it.
    `ahead`: the statement goes with the next one of the caller's transaction, inside a block of
    appended rows (appends.write_ahead: a webhook's handlers), and at once elsewhere."""
    alerts = [(account.user_id, account._alerts_taken()) for account in accounts]
    taken = [account._rows_taken() for account in accounts]
    inserted = [list(chain.from_iterable(tables)) for tables in zip(*(rows for rows, _, _ in taken), strict=True)]
    updated: dict[tuple, list[Model]] = defaultdict(list)
    for _, rows, _ in taken:
        for row, fields in rows:
            updated[type(row), fields].append(row)
    shown_changed = [account.user_id for account, (_, _, shown) in zip(accounts, taken, strict=True) if shown]
    if shown_changed:
        # Their cached `me/credits/` copies go when this commits.
        balances_invalidate(user_ids=shown_changed)
    statements = [sql.insert(rows) for rows in inserted if rows]
    for row in (row for rows in inserted for row in rows):
        row._state.adding, row._state.db = False, DEFAULT_DB_ALIAS
    for (_, fields), rows in updated.items():
        statements += sql.update_many(rows, list(fields))
    if ahead:
        write_ahead(*statements)
    else:
        sql.execute_all(statements, commit=commit and not any(due for _, due in alerts))
    for user_id, due in alerts:
        if due:
            alerts_send(user_id=user_id, alerts=due)


def recharge_queue(*, user_id) -> None:
    """Queues one auto-recharge check of the user. Deductions below the threshold keep coming while a
    recharge is in flight (or the month's cap is reached): one check per user per
    AUTO_RECHARGE_QUEUE_SECONDS is queued, the others are dropped here (the check itself is exact)."""
    if not cache.add(f"credits:recharge-queued:{user_id}", 1, timeout=settings.AUTO_RECHARGE_QUEUE_SECONDS):
        return
    from credits.tasks import auto_recharge_run

    auto_recharge_run.delay(user_id)


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
