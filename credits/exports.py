from billing_project.gdpr import export_section
from credits.models import (
    CreditAllocation,
    CreditDeductionLedger,
    TokenUsageLedger,
    UserCreditBalance,
    UserCreditSource,
)


@export_section("credits")
def credits_of(user) -> dict:
    return {
        "balance": UserCreditBalance.objects.filter(user=user).values_list("amount", flat=True).first(),
        "grants": list(UserCreditSource.objects.filter(user=user).values()),
        "allocations": list(CreditAllocation.objects.filter(user=user).values()),
        "deductions": list(CreditDeductionLedger.objects.filter(user=user).values()),
        "usage": list(TokenUsageLedger.objects.filter(user=user).values()),
    }
