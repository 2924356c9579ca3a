"""Reconciliation and daily rollups, both computed from the append-only ledgers.

The identity proved per user (SPEC 4):
    balance == sum of grant remainders == allocations - deductions - expirations + reversals
and, for lineage, each grant's remainder == its original amount - what its consumption rows took.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.apps import apps
from django.db import transaction
from django.db.models import Avg, Count, Exists, F, OuterRef, Q, Sum
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of
from billing_project.errors import NotFound
from credits.codes import ErrorCode
from credits.models import (
    CreditAllocation,
    CreditDeductionLedger,
    CreditUsageDailySummary,
    DeductionReason,
    DeductionType,
    TokenUsageDailySummary,
    TokenUsageLedger,
    UsageStatus,
    UserCreditBalance,
    UserCreditSource,
)
from credits.selectors import INPUT_TOKENS_TOTAL, day_bounds
from credits.services.accounts import LockedAccount


@dataclass
class LedgerFigures:
    """One user's balance as stored and as the ledgers say it should be."""

    user_id: int
    balance: int = 0
    grants_remaining: int = 0
    allocated: int = 0
    deducted: int = 0
    reversed: int = 0
    grant_mismatches: list[dict] = field(default_factory=list)
    unbalanced_deductions: list[dict] = field(default_factory=list)

    @property
    def from_ledger(self) -> int:
        return self.allocated - self.deducted + self.reversed

    @property
    def problems(self) -> list[str]:
        found = []
        if self.balance != self.from_ledger:
            found.append(f"balance {self.balance} != ledger {self.from_ledger}")
        if self.grants_remaining != self.from_ledger:
            found.append(f"grant remainders {self.grants_remaining} != ledger {self.from_ledger}")
        found += [
            f"grant {row['grant_id']} remaining {row['remaining']} != {row['expected']} by its consumptions"
            for row in self.grant_mismatches
        ]
        found += [
            f"deduction {row['deduction_id']} of {row['amount']} has lineage rows for {row['consumed']}"
            for row in self.unbalanced_deductions
        ]
        return found


def _sums(queryset, value: str) -> dict:
    return dict(queryset.values_list("user_id").annotate(total=Sum(value)).values_list("user_id", "total"))


def ledger_figures(*, user_ids: list[int]) -> list[LedgerFigures]:
    """The figures of the given users, in a fixed number of grouped queries."""
    figures = {user_id: LedgerFigures(user_id=user_id) for user_id in user_ids}
    for user_id, amount in UserCreditBalance.objects.filter(user_id__in=user_ids).values_list("user_id", "amount"):
        figures[user_id].balance = amount
    grants = UserCreditSource.objects.filter(user_id__in=user_ids)
    for user_id, total in _sums(grants, "remaining").items():
        figures[user_id].grants_remaining = total or 0
    for user_id, total in _sums(CreditAllocation.objects.filter(user_id__in=user_ids), "amount").items():
        figures[user_id].allocated = total or 0
    ledger = CreditDeductionLedger.objects.filter(user_id__in=user_ids)
    for user_id, total in _sums(ledger.exclude(reason=DeductionReason.REVERSAL), "amount").items():
        figures[user_id].deducted = total or 0
    for user_id, total in _sums(ledger.filter(reason=DeductionReason.REVERSAL), "amount").items():
        figures[user_id].reversed = total or 0
    for grant in grants.annotate(consumed=Sum("consumptions__amount")).values(
        "id", "user_id", "original_amount", "remaining", "consumed"
    ):
        expected = grant["original_amount"] - (grant["consumed"] or 0)
        if grant["remaining"] != expected:
            figures[grant["user_id"]].grant_mismatches.append(
                {"grant_id": grant["id"], "remaining": grant["remaining"], "expected": expected}
            )
    unbalanced = (
        ledger.exclude(reason=DeductionReason.REVERSAL)
        .annotate(consumed=Sum("consumptions__amount"))
        .filter(Q(consumed__isnull=True) | ~Q(consumed=F("amount")))
        .values("id", "user_id", "amount", "consumed")
    )
    for row in unbalanced:
        figures[row["user_id"]].unbalanced_deductions.append(
            {"deduction_id": row["id"], "amount": row["amount"], "consumed": row["consumed"] or 0}
        )
    return list(figures.values())


def ledger_dangling_references() -> dict[str, int]:
    """For each reference of the credits ledgers that the database does not check (credits.models,
    LEDGER_REFERENCE), how many rows name a row that does not exist, by "model.field": all zero on a
    sound ledger. One anti-join per reference (NOT EXISTS on the referenced primary key)."""
    dangling = {}
    for model in apps.get_app_config("credits").get_models():
        for reference in model._meta.concrete_fields:
            if not reference.is_relation or reference.db_constraint:
                continue
            # Base managers: a default manager that filters rows would count their references as missing.
            missing = ~Exists(reference.related_model._base_manager.filter(pk=OuterRef(reference.attname)))
            rows = model._base_manager.filter(missing, **{f"{reference.attname}__isnull": False})
            dangling[f"{model._meta.model_name}.{reference.name}"] = rows.count()
    return dangling


def ledger_user_ids(*, user_id: int | None = None) -> list[int]:
    """Every user with a balance or a ledger row, in id order."""
    if user_id is not None:
        return [user_id]
    ids = set(UserCreditBalance.objects.values_list("user_id", flat=True))
    ids |= set(UserCreditSource.objects.values_list("user_id", flat=True).distinct())
    return sorted(ids)


@transaction.atomic
def ledger_repair(*, user_id: int, actor=None) -> LedgerFigures:
    """Rebuilds a user's grant remainders and balance from the ledger rows, through their locked
    account, and audits what it changed. Returns the figures found before the repair."""
    # Grants past their expiry stay as stored: expiring them from damaged remainders would write
    # damaged ledger rows. The expiry job expires them once repaired.
    account = LockedAccount.open(user_id=user_id, now=timezone.now(), expire_overdue=False)
    if account is None:
        raise NotFound("No such user.", code=ErrorCode.UNKNOWN_USER)
    (before,) = ledger_figures(user_ids=[user_id])
    if not before.problems:
        return before
    account.repair(
        balance=before.from_ledger,
        grant_remainders={row["grant_id"]: row["expected"] for row in before.grant_mismatches},
    )
    account.flush()
    audit_record(
        action=AuditAction.REPAIR,
        resource_type=resource_type_of(UserCreditBalance),
        resource_id=str(user_id),
        previous_value={"balance": before.balance, "grant_mismatches": before.grant_mismatches},
        new_value={"balance": before.from_ledger, "problems": before.problems},
        actor=actor,
    )
    return before


USAGE_REASONS = [member.value for member in DeductionType]


def days_between(date_from: date, date_to: date) -> list[date]:
    """Every day from date_from to date_to, both included."""
    return [date_from + timedelta(days=offset) for offset in range((date_to - date_from).days + 1)]


@transaction.atomic
def usage_rollup_day(*, day: date) -> int:
    """Rebuilds both daily summaries of one day from the ledgers; running it again gives the same rows."""
    start, end = day_bounds(day, day)
    TokenUsageDailySummary.objects.filter(summary_date=day).delete()
    CreditUsageDailySummary.objects.filter(summary_date=day).delete()
    usage = (
        TokenUsageLedger.objects.filter(created_at__gte=start, created_at__lt=end)
        .values("user_id")
        .annotate(
            requests=Count("id"),
            successes=Count("id", filter=Q(status=UsageStatus.SUCCESS)),
            input_tokens=Sum(INPUT_TOKENS_TOTAL),
            output_tokens=Sum("output_tokens"),
            vendor_cost=Sum("vendor_cost"),
            credits=Sum("credits_deducted"),
            gross_margin=Sum("gross_margin_usd"),
            latency=Avg("processing_time_ms"),
        )
    )
    credit_rows = defaultdict(dict)
    token_summaries = []
    for row in usage:
        token_summaries.append(
            TokenUsageDailySummary(
                user_id=row["user_id"],
                summary_date=day,
                total_requests=row["requests"],
                total_input_tokens=row["input_tokens"] or 0,
                total_output_tokens=row["output_tokens"] or 0,
                total_vendor_cost=row["vendor_cost"] or 0,
                total_credits_deducted=row["credits"] or 0,
                total_gross_margin=row["gross_margin"] or 0,
                avg_request_latency_ms=round(row["latency"]) if row["latency"] is not None else None,
                success_rate=round(100 * row["successes"] / row["requests"], 2),
            )
        )
        credit_rows[row["user_id"]].update(
            total_requests=row["requests"],
            total_vendor_cost=row["vendor_cost"] or 0,
            total_gross_margin=row["gross_margin"] or 0,
        )
    ledger = CreditDeductionLedger.objects.filter(created_at__gte=start, created_at__lt=end)
    for user_id, total in _sums(ledger.filter(reason__in=USAGE_REASONS), "amount").items():
        credit_rows[user_id]["total_deductions"] = total
    for user_id, total in _sums(ledger.filter(reason=DeductionReason.EXPIRATION), "amount").items():
        credit_rows[user_id]["total_credits_expired"] = total
    granted = CreditAllocation.objects.filter(created_at__gte=start, created_at__lt=end)
    for user_id, total in _sums(granted, "amount").items():
        credit_rows[user_id]["total_credits_granted"] = total
    TokenUsageDailySummary.objects.bulk_create(token_summaries)
    CreditUsageDailySummary.objects.bulk_create(
        CreditUsageDailySummary(user_id=user_id, summary_date=day, **values)
        for user_id, values in sorted(credit_rows.items())
    )
    return len(token_summaries) + len(credit_rows)
