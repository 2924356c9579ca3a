"""Setting a user's monthly credit budget (credits.budgets): by the user, or by staff with an audit row.
The budget lives on the balance row, so it is written through the user's LockedAccount like any
change of that row, and a hard limit applies from the next request the lock lets through."""

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of
from billing_project.errors import NotFound, RuleViolation
from billing_project.transactions import conflict_retrying
from credits.budgets import Budget, month_start
from credits.codes import ErrorCode
from credits.models import CreditDeductionLedger, DeductionReason, UserCreditBalance
from credits.services.accounts import SPENDING_REASONS, LockedAccount


def _month_spend_of_ledger(*, user_id, now) -> int:
    """This month's usage spend as the ledger tells it: usage deductions of the month, less the
    reversals of those (the rule the balance row's count follows)."""
    start = month_start(now)
    this_month = CreditDeductionLedger.objects.filter(user_id=user_id, created_at__gte=start)
    spent = this_month.filter(reason__in=SPENDING_REASONS).aggregate(total=Sum("amount"))["total"] or 0
    given_back = (
        this_month.filter(
            reason=DeductionReason.REVERSAL, reverses__reason__in=SPENDING_REASONS, reverses__created_at__gte=start
        ).aggregate(total=Sum("amount"))["total"]
        or 0
    )
    return max(spent - given_back, 0)


def _budget_change(*, user_id, monthly_credits: int | None, hard_limit: bool) -> tuple[Budget, Budget]:
    """The budget before and after, both read under the balance lock."""
    if monthly_credits is not None and monthly_credits <= 0:
        raise RuleViolation("A budget must be a positive number of credits.", code=ErrorCode.INVALID_AMOUNT)
    if hard_limit and monthly_credits is None:
        raise RuleViolation("A hard limit needs a monthly budget.", code=ErrorCode.HARD_LIMIT_WITHOUT_BUDGET)
    account = LockedAccount.open(user_id=user_id, now=timezone.now(), expire_overdue=False)
    if account is None:
        raise NotFound("No such user.", code=ErrorCode.UNKNOWN_USER)
    if account.balance.budget_month != account.month:
        # Counting starts with the first usage of a month; a row that has none counted this month may
        # hold usage recorded before budgets existed: the ledger says what it was.
        account.budget_recount(spent=_month_spend_of_ledger(user_id=user_id, now=account.now))
    before = account.budget
    account.budget_set(monthly_credits=monthly_credits, hard_limit=hard_limit)
    account.flush()
    return before, account.budget


@conflict_retrying
@transaction.atomic
def budget_set(*, user_id, monthly_credits: int | None, hard_limit: bool) -> Budget:
    """Sets (or with `monthly_credits` None, removes) the user's monthly budget; a hard limit needs a
    budget. This month's spend and its notified thresholds are kept."""
    return _budget_change(user_id=user_id, monthly_credits=monthly_credits, hard_limit=hard_limit)[1]


@conflict_retrying
@transaction.atomic
def budget_set_by_staff(*, user_id, monthly_credits: int | None, hard_limit: bool, actor) -> Budget:
    """`budget_set` for a user by staff, audited with it."""
    before, after = _budget_change(user_id=user_id, monthly_credits=monthly_credits, hard_limit=hard_limit)
    audit_record(
        action=AuditAction.UPDATE,
        resource_type=resource_type_of(UserCreditBalance),
        resource_id=str(user_id),
        previous_value={"monthly_credits": before.monthly_credits, "hard_limit": before.hard_limit},
        new_value={"user_id": user_id, "monthly_credits": after.monthly_credits, "hard_limit": after.hard_limit},
        actor=actor,
    )
    return after
