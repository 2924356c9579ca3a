"""Credits in and out of a balance outside usage: grants, staff grants, reversals and expiry.
Every change locks the user's UserCreditBalance row and writes its ledger rows in the same transaction."""

from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of
from billing_project.errors import Conflict, NotFound, RuleViolation
from credits.models import (
    CreditAllocation,
    CreditDeductionLedger,
    CreditSource,
    DeductionReason,
    GrantSource,
    UserCreditSource,
)
from credits.services.accounts import LockedAccount, balance_lock


@dataclass(frozen=True)
class GrantResult:
    allocation: CreditAllocation
    balance_after: int
    created: bool


def _locked_balance(user_id):
    balance = balance_lock(user_id=user_id)
    if balance is None:
        raise NotFound("No such user.", code="unknown_user")
    return balance


@transaction.atomic
def credit_grant(
    *,
    user,
    amount: int,
    source: CreditSource,
    subscription=None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    expires_at: datetime | None = None,
    reason: str = "",
    granted_by=None,
) -> GrantResult:
    """Adds credits: the allocation, its grant and the balance, together.

    Idempotent per (subscription, period_start, source): a period is never allocated twice.
    """
    if amount <= 0:
        raise RuleViolation("A grant must be a positive number of credits.", code="invalid_amount")
    balance = _locked_balance(user.pk)
    if subscription is not None:
        # Checked under the balance lock; the unique constraint backs it up.
        existing = CreditAllocation.objects.filter(
            subscription=subscription, period_start=period_start, source=source
        ).first()
        if existing is not None:
            return GrantResult(allocation=existing, balance_after=balance.amount, created=False)
    now = timezone.now()
    try:
        with transaction.atomic():
            allocation = CreditAllocation.objects.create(
                user=user,
                subscription=subscription,
                amount=amount,
                source=source,
                period_start=period_start,
                period_end=period_end,
                expires_at=expires_at,
                applied_to_balance_at=now,
                reason=reason,
                granted_by=granted_by,
            )
    except IntegrityError:
        existing = CreditAllocation.objects.get(subscription=subscription, period_start=period_start, source=source)
        return GrantResult(allocation=existing, balance_after=balance.amount, created=False)
    UserCreditSource.objects.create(
        user=user,
        source=source,
        original_amount=amount,
        remaining=amount,
        expires_at=expires_at,
        allocation=allocation,
    )
    balance.amount += amount
    balance.save(update_fields=["amount", "updated_at"])
    return GrantResult(allocation=allocation, balance_after=balance.amount, created=True)


GRANTABLE_BY_STAFF = (CreditSource.ADMIN_GRANT, CreditSource.BONUS, CreditSource.REFERRAL)


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
        raise RuleViolation("A grant needs a reason.", code="reason_required")
    if source not in GRANTABLE_BY_STAFF:
        raise RuleViolation(f"Staff cannot grant credits from '{source}'.", code="invalid_source")
    if expires_at is not None and expires_at <= timezone.now():
        raise RuleViolation("The expiry must be in the future.", code="expiry_in_past")
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


@transaction.atomic
def deduction_reverse(*, deduction_id, reason: str, actor=None, expires_at: datetime | None = None) -> ReversalResult:
    """Gives back the credits of a deduction: a new `reversal` ledger row (the original is never
    edited) and a new grant with the credits, audited. A deduction is reversed at most once."""
    if not reason.strip():
        raise RuleViolation("A reversal needs a reason.", code="reason_required")
    deduction = CreditDeductionLedger.objects.filter(pk=deduction_id).first()
    if deduction is None:
        raise NotFound("No such deduction.", code="unknown_deduction")
    balance = _locked_balance(deduction.user_id)
    # Re-read under the lock: a concurrent reversal of the same row has committed or not.
    if deduction.reason == DeductionReason.REVERSAL:
        raise Conflict("A reversal cannot itself be reversed.", code="not_reversible")
    if CreditDeductionLedger.objects.filter(reverses=deduction).exists():
        raise Conflict("This deduction has already been reversed.", code="already_reversed")
    now = timezone.now()
    before = balance.amount
    reversal = CreditDeductionLedger.objects.create(
        user_id=deduction.user_id,
        subscription_id=deduction.subscription_id,
        amount=deduction.amount,
        balance_before=before,
        balance_after=before + deduction.amount,
        reason=DeductionReason.REVERSAL,
        reverses=deduction,
        reversed_at=now,
        reversed_by=actor,
        reversal_reason=reason,
    )
    grant = UserCreditSource.objects.create(
        user_id=deduction.user_id,
        source=GrantSource.REVERSAL,
        original_amount=deduction.amount,
        remaining=deduction.amount,
        expires_at=expires_at,
        reversal_of=deduction,
    )
    balance.amount = before + deduction.amount
    balance.save(update_fields=["amount", "updated_at"])
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
    return (
        UserCreditSource.objects.filter(remaining__gt=0, expires_at__lte=now)
        .order_by("user_id")
        .values_list("user_id", flat=True)
        .distinct()
    )


@transaction.atomic
def allocations_claw_back(*, user_id, allocation_ids: list, reason: str, subscription=None) -> int:
    """Takes back what is left of the credits of these allocations (a period whose payment was
    refunded): one `admin_adjustment` ledger row, drawn from exactly their grants, through the locked
    account. Spent credits stay spent, so the balance never goes below zero. Returns the credits taken."""
    account = LockedAccount.open(user_id=user_id, now=timezone.now())
    if account is None:
        return 0
    # Read under the balance lock: which of the user's grants came from these allocations.
    grant_ids = set(
        UserCreditSource.objects.filter(user_id=user_id, allocation_id__in=allocation_ids).values_list("pk", flat=True)
    )
    deduction = account.take_grants(
        grant_ids, reason=DeductionReason.ADMIN_ADJUSTMENT, subscription_id=getattr(subscription, "pk", None)
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
