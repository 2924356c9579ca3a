"""The notifications that spending credits can make due: a low balance, a depleted balance, a budget
threshold. The locked account decides which are due (credits.services.accounts) and marks them on the
balance row; this sends them, in the same transaction, through `billing_project.outbound.notify`, which
tells each occurrence once."""

from dataclasses import dataclass

from django.contrib.auth import get_user_model

from billing_project.enums import EventType
from billing_project.outbound import notify
from credits.budgets import Budget


@dataclass(frozen=True)
class Alert:
    kind: EventType
    occurrence: str
    context: dict

    @classmethod
    def budget_threshold(cls, *, user_id, month: str, budget: Budget, percent: int) -> "Alert":
        return cls(
            kind=EventType.CREDITS_BUDGET_THRESHOLD,
            occurrence=f"{user_id}:{month}:{percent}",
            context={
                "user_id": user_id,
                "month": month,
                "percent": percent,
                "monthly_credits": budget.monthly_credits,
                "spent_this_month": budget.spent_this_month,
                "hard_limit": budget.hard_limit,
            },
        )

    @classmethod
    def balance_low(cls, *, user_id, armed_by, balance: int, threshold: int) -> "Alert":
        return cls(
            kind=EventType.CREDITS_BALANCE_LOW,
            occurrence=_balance_occurrence(user_id, armed_by),
            context={"user_id": user_id, "balance": balance, "threshold": threshold},
        )

    @classmethod
    def balance_depleted(cls, *, user_id, armed_by) -> "Alert":
        return cls(
            kind=EventType.CREDITS_BALANCE_DEPLETED,
            occurrence=_balance_occurrence(user_id, armed_by),
            context={"user_id": user_id, "balance": 0},
        )


def _balance_occurrence(user_id, armed_by) -> str:
    """One fall of the balance per re-arming grant: '<user id>:<grant id>' ('<user id>:first' before any)."""
    return f"{user_id}:{armed_by or 'first'}"


def alerts_send(*, user_id, alerts: list[Alert]) -> None:
    """Notifies the user of each alert; only ever called when one is due, so the user is read only then."""
    user = get_user_model()._default_manager.get(pk=user_id)
    for alert in alerts:
        notify(user=user, kind=alert.kind, occurrence=alert.occurrence, context=alert.context)
