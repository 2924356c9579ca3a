"""Credits in and out of a balance outside usage: grants, staff grants, reversals and expiry.
Each goes through the user's LockedAccount (credits.services.accounts), which writes the change and
its ledger rows in the caller's transaction."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of
from billing_project import sql
from billing_project.enums import EventType
from billing_project.errors import Conflict, NotFound, RuleViolation
from billing_project.outbound import event_emit
from billing_project.transactions import conflict_retrying
from credits.codes import ErrorCode
from credits.models import (
    CreditAllocation,
    CreditDeductionLedger,
    CreditSource,
    DeductionReason,
    UserCreditSource,
)
from credits.services.accounts import LockedAccount


@dataclass(frozen=True)
class GrantResult:
    allocation: CreditAllocation
    balance_after: int
    created: bool


def _account_reading(user_id, now: datetime, reads: list[sql.Statement]) -> tuple[LockedAccount, list[list[tuple]]]:
    """The user's locked account, and the rows of `reads` run under its lock in the same round trip."""
    opened = LockedAccount.open_reading(user_id=user_id, now=now, reads=reads, expire_overdue=False)
    if opened is None:
        raise NotFound("No such user.", code=ErrorCode.UNKNOWN_USER)
    return opened


@conflict_retrying
@transaction.atomic(savepoint=False)  # its writes stand or fall with the caller's transaction
def credit_grant(
    *,
    user,
    amount: int,
    source: CreditSource,
    subscription_id=None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    expires_at: datetime | None = None,
    reason: str = "",
    granted_by=None,
    payment_operation_id=None,
) -> GrantResult:
    """Adds credits: the allocation, its grant and the balance, together.

    Idempotent per (subscription, period_start, source): a period is never allocated twice; and per
    payment operation: a purchase grants its credits once.
    """
    if amount <= 0:
        raise RuleViolation("A grant must be a positive number of credits.", code=ErrorCode.INVALID_AMOUNT)
    now = timezone.now()
    period_read = []
    if subscription_id is not None:
        # Read under the balance lock of the subscription's user (in the lock's round trip), so a
        # concurrent allocation of the same period has committed (found here) or waits; the unique
        # constraint backs it up.
        period_read.append(
            (
                sql.first_statement(CreditAllocation, "subscription_id = %s AND period_start = %s AND source = %s"),
                sql.values_of(
                    CreditAllocation, subscription_id=subscription_id, period_start=period_start, source=source
                ),
            )
        )
    account, results = _account_reading(user.pk, now, period_read)
    if results and (existing := sql.loaded(CreditAllocation, results[0])) is not None:
        return GrantResult(allocation=existing, balance_after=account.balance.amount, created=False)
    if payment_operation_id is not None:
        existing = CreditAllocation.objects.filter(payment_operation_id=payment_operation_id).first()
        if existing is not None:
            return GrantResult(allocation=existing, balance_after=account.balance.amount, created=False)
    allocation = sql.new_row(
        CreditAllocation,
        user_id=user.pk,
        subscription_id=subscription_id,
        amount=amount,
        source=source,
        period_start=period_start,
        period_end=period_end,
        expires_at=expires_at,
        applied_to_balance_at=now,
        reason=reason,
        granted_by_id=granted_by.pk if granted_by is not None else None,
        payment_operation_id=payment_operation_id,
    )
    account.grant(allocation)
    account.flush(ahead=True)  # nothing here waits for it: in a webhook's block, a round trip fewer
    event_emit(
        type=EventType.CREDITS_GRANTED,
        subject=f"user:{user.pk}",
        user=user,
        data={
            "allocation_id": str(allocation.pk),
            "user_id": user.pk,
            "amount": amount,
            "source": source,
            "subscription_id": str(subscription_id) if subscription_id else None,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "balance_after": account.balance.amount,
        },
    )
    return GrantResult(allocation=allocation, balance_after=account.balance.amount, created=True)


GRANTABLE_BY_STAFF = (CreditSource.ADMIN_GRANT, CreditSource.BONUS, CreditSource.REFERRAL)


@conflict_retrying
@transaction.atomic
def credit_grant_by_staff(
    *,
    user,
    amount: int,
    reason: str,
    actor=None,
    expires_at: datetime | None = None,
    source: CreditSource = CreditSource.ADMIN_GRANT,
) -> GrantResult:
    """A grant made by staff (console, API or `manage.py grant_credits`), audited with it."""
    if not reason.strip():
        raise RuleViolation("A grant needs a reason.", code=ErrorCode.REASON_REQUIRED)
    if source not in GRANTABLE_BY_STAFF:
        raise RuleViolation(f"Staff cannot grant credits from '{source}'.", code=ErrorCode.INVALID_SOURCE)
    if expires_at is not None and expires_at <= timezone.now():
        raise RuleViolation("The expiry must be in the future.", code=ErrorCode.EXPIRY_IN_PAST)
    result = credit_grant(
        user=user, amount=amount, source=source, expires_at=expires_at, reason=reason, granted_by=actor
    )
    audit_record(
        action=AuditAction.GRANT,
        resource_type=resource_type_of(CreditAllocation),
        resource_id=str(result.allocation.pk),
        new_value={
            "user_id": user.pk,
            "amount": amount,
            "source": source,
            "expires_at": expires_at,
            "reason": reason,
            "balance_after": result.balance_after,
        },
        actor=actor,
        status_code=201,
    )
    return result


@dataclass(frozen=True)
class ReversalResult:
    reversal: CreditDeductionLedger
    grant: UserCreditSource
    balance_after: int


@conflict_retrying
@transaction.atomic
def deduction_reverse(*, deduction_id, reason: str, actor=None, expires_at: datetime | None = None) -> ReversalResult:
    """Gives back the credits of a deduction: a new `reversal` ledger row (the original is never
    edited) and a new grant with the credits, audited. A deduction is reversed at most once."""
    if not reason.strip():
        raise RuleViolation("A reversal needs a reason.", code=ErrorCode.REASON_REQUIRED)
    deduction = CreditDeductionLedger.objects.filter(pk=deduction_id).first()
    if deduction is None:
        raise NotFound("No such deduction.", code=ErrorCode.UNKNOWN_DEDUCTION)
    account, _ = _account_reading(deduction.user_id, timezone.now(), [])
    # Checked under the lock: a concurrent reversal of the same row has committed or not.
    if deduction.reason == DeductionReason.REVERSAL:
        raise Conflict("A reversal cannot itself be reversed.", code=ErrorCode.NOT_REVERSIBLE)
    if CreditDeductionLedger.objects.filter(reverses=deduction).exists():
        raise Conflict("This deduction has already been reversed.", code=ErrorCode.ALREADY_REVERSED)
    before = account.balance.amount
    reversal, grant = account.reverse(
        deduction, reason=reason, actor_id=actor.pk if actor is not None else None, expires_at=expires_at
    )
    account.flush()
    balance = account.balance
    audit_record(
        action=AuditAction.REVERSE,
        resource_type=resource_type_of(CreditDeductionLedger),
        resource_id=str(deduction.pk),
        previous_value={"balance": before},
        new_value={
            "reversal_id": reversal.pk,
            "grant_id": grant.pk,
            "amount": deduction.amount,
            "reason": reason,
            "balance_after": balance.amount,
        },
        actor=actor,
    )
    return ReversalResult(reversal=reversal, grant=grant, balance_after=balance.amount)


@transaction.atomic
def credits_expire_for_user(*, user_id, now: datetime | None = None) -> int:
    """Writes an `expiration` ledger row for each of the user's grants past its expiry; returns how many."""
    account = LockedAccount.open(user_id=user_id, now=now or timezone.now())
    if account is None:
        return 0
    expired = len(account.deductions)
    account.flush()
    return expired


def users_with_overdue_grants(*, now: datetime):
    """The users with grants past their expiry and credits left on them (grant_open_expiry_idx: the
    grants not closed yet, which grants_spent_close keeps to those that wait for the expiry job)."""
    return (
        UserCreditSource.objects.filter(expired_at__isnull=True, expires_at__lte=now, remaining__gt=0)
        .order_by("user_id")
        .values_list("user_id", flat=True)
        .distinct()
    )


def grants_spent_unclosed(*, now: datetime):
    """The grants past their expiry that were spent before it and are not closed yet."""
    return UserCreditSource.objects.filter(expired_at__isnull=True, expires_at__lte=now, remaining=0)


def grants_spent_close(*, now: datetime) -> int:
    """Closes the grants past their expiry that were spent before it (`expired_at`, no ledger row:
    nothing was left to expire); returns how many. They leave grant_open_expiry_idx, whose condition
    cannot read `remaining` without making every debit's change of it a non-HOT update. No balance
    lock: a spent grant gains no credits again (a reversal restores into a new grant). A ledger repair
    that sets credits on a closed one leaves them to the user's next debit, which expires them first."""
    return grants_spent_unclosed(now=now).update(expired_at=now, updated_at=now)


@dataclass(frozen=True)
class ExpiryResult:
    expired: int  # grants whose credits left were expired, an `expiration` ledger row each
    users: int  # whose grants those were
    closed: int  # grants spent before their expiry, closed without a ledger row


def credits_expire(*, now: datetime, progress: Callable[[list], Iterable] = iter) -> ExpiryResult:
    """The expiry job (beat's `expire_credits`, `manage.py expire_credits`): closes the grants spent
    before their expiry, then expires what is left of the others, one transaction per user so that a
    user's failure or a long run holds no other user's balance. `progress` wraps the users' ids (a
    progress bar). Idempotent: a second run finds nothing left to do."""
    closed = grants_spent_close(now=now)
    user_ids = list(users_with_overdue_grants(now=now))
    expired = sum(credits_expire_for_user(user_id=user_id, now=now) for user_id in progress(user_ids))
    return ExpiryResult(expired=expired, users=len(user_ids), closed=closed)


@transaction.atomic
def allocations_claw_back(
    *, user_id, allocation_ids: list, reason: str, subscription=None, limit: int | None = None
) -> int:
    """Takes back what is left of the credits of these allocations (a period whose payment was
    refunded), at most `limit` credits when given (a share of them): one `admin_adjustment` ledger
    row, drawn from exactly their grants, through the locked account. Spent credits stay spent, and
    credits live holds reserve stay with the requests in flight (at most what is available is taken),
    so neither the balance nor `available` goes below zero. Returns the credits taken."""
    account = LockedAccount.open(user_id=user_id, now=timezone.now())
    if account is None:
        return 0
    # Read under the balance lock: which of the user's grants came from these allocations.
    grant_ids = set(
        UserCreditSource.objects.filter(user_id=user_id, allocation_id__in=allocation_ids).values_list("pk", flat=True)
    )
    deduction = account.take_grants(
        grant_ids,
        reason=DeductionReason.ADMIN_ADJUSTMENT,
        limit=limit,
        subscription_id=getattr(subscription, "pk", None),
    )
    account.flush()
    if deduction is None:
        return 0
    audit_record(
        action=AuditAction.UPDATE,
        resource_type=resource_type_of(deduction),
        resource_id=str(deduction.pk),
        new_value={"clawed_back": deduction.amount, "balance_after": deduction.balance_after, "reason": reason},
    )
    return deduction.amount
