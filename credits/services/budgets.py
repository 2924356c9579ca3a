"""Setting a user's monthly credit budget (credits.budgets): by the user, or by staff with an audit row.
The budget lives on the balance row, so it is written through the user's LockedAccount like any
change of that row, and a hard limit applies from the next request the lock lets through."""

from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of
from billing_project.errors import NotFound, RuleViolation
from billing_project.transactions import conflict_retrying
from credits.budgets import Budget
from credits.codes import ErrorCode
from credits.models import UserCreditBalance
from credits.services.accounts import LockedAccount


def _budget_change(*, user_id, monthly_credits: int | None, hard_limit: bool) -> tuple[Budget, Budget]:
    """The budget before and after, both read under the balance lock."""
    if monthly_credits is not None and monthly_credits <= 0:
        raise RuleViolation("A budget must be a positive number of credits.", code=ErrorCode.INVALID_AMOUNT)
    if hard_limit and monthly_credits is None:
        raise RuleViolation("A hard limit needs a monthly budget.", code=ErrorCode.HARD_LIMIT_WITHOUT_BUDGET)
    account = LockedAccount.open(user_id=user_id, now=timezone.now(), expire_overdue=False)
    if account is None:
        raise NotFound("No such user.", code=ErrorCode.UNKNOWN_USER)
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
