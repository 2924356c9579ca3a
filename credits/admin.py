"""Vendor prices and margins are edited here; balances, grants and ledgers are read-only: they change
only through the credit services."""

from django import forms
from django.contrib import admin

from audit.admin_base import AuditedModelAdmin, CreatorStampAdminMixin, ReadOnlyHistoryAdmin, ReadOnlyModelAdmin
from billing_project.admin_actions import ReasonForm, form_action
from credits.models import (
    CreditAllocation,
    CreditConsumption,
    CreditDeductionLedger,
    CreditHold,
    CreditUsageDailySummary,
    MarginAuditLog,
    ModelProviderPricing,
    PricingConfig,
    Provider,
    TokenUsageDailySummary,
    TokenUsageLedger,
    UserCreditBalance,
    UserCreditSource,
)
from credits.services import credit_grant_by_staff, deduction_reverse, pricing_config_approve, pricing_config_reject
from credits.services.grants import GRANTABLE_BY_STAFF


class GrantCreditsForm(forms.Form):
    amount = forms.IntegerField(min_value=1, max_value=1_000_000_000, help_text="Credits (1 credit = USD 0.001).")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=1000)
    source = forms.ChoiceField(choices=[(value, value) for value in GRANTABLE_BY_STAFF])
    expires_at = forms.DateTimeField(required=False, help_text="Empty: the credits never expire.")


def _grant(*, request, obj, amount, reason, source, expires_at):
    user = getattr(obj, "user", obj)
    result = credit_grant_by_staff(
        user=user, amount=amount, reason=reason, source=source, expires_at=expires_at, actor=request.user
    )
    return f"{user.email}: +{amount} credits, balance {result.balance_after}"


grant_credits = form_action(
    form_class=GrantCreditsForm,
    description="Grant credits",
    perform=_grant,
    name="grant_credits",
    permissions=["grant"],
)


class GrantCreditsPermission:
    """For a ModelAdmin offering `grant_credits`: the action needs its own permission."""

    def has_grant_permission(self, request):
        return request.user.has_perm("credits.grant_credits")


def _reverse(*, request, obj, reason):
    result = deduction_reverse(deduction_id=obj.pk, reason=reason, actor=request.user)
    return f"reversed {obj.amount} credits of {obj.user}, balance {result.balance_after}"


reverse_deductions = form_action(
    form_class=ReasonForm,
    description="Reverse the selected deductions",
    perform=_reverse,
    name="reverse_deductions",
    permissions=["reverse"],
)


def _reject(*, request, obj, reason):
    pricing_config_reject(config_id=obj.pk, actor=request.user, reason=reason)
    return f"rejected {obj}"


reject_pricing_changes = form_action(
    form_class=ReasonForm,
    description="Reject the selected pricing changes",
    perform=_reject,
    name="reject_changes",
    permissions=["approve"],
)


def _approve(*, request, obj):
    pricing_config_approve(config_id=obj.pk, actor=request.user)
    return f"approved {obj}"


approve_pricing_changes = form_action(
    form_class=forms.Form,  # a confirmation page: approving puts a margin in force
    description="Approve the selected pricing changes",
    perform=_approve,
    name="approve_pricing_changes",
    permissions=["approve"],
)


@admin.register(Provider)
class ProviderAdmin(AuditedModelAdmin):
    list_display = ("name", "display_name", "api_type", "vendor_family", "is_enabled")
    list_filter = ("api_type", "vendor_family", "is_enabled")
    search_fields = ("name", "display_name")
    readonly_fields = ("created_at", "updated_at")


@admin.register(ModelProviderPricing)
class ModelProviderPricingAdmin(AuditedModelAdmin):
    list_display = (
        "provider",
        "model_name",
        "region",
        "input_price_per_1k",
        "output_price_per_1k",
        "effective_from",
        "effective_until",
        "is_active",
    )
    list_filter = ("is_active", "provider")
    list_select_related = ("provider",)
    search_fields = ("model_name", "vendor_model_id", "provider__name")
    date_hierarchy = "effective_from"
    autocomplete_fields = ("provider",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(PricingConfig)
class PricingConfigAdmin(CreatorStampAdminMixin, AuditedModelAdmin):
    """The approval fields are read-only: a change is approved by someone other than its creator,
    through the approval action, never by editing the form."""

    list_display = (
        "scope_type",
        "subscription_tier",
        "provider",
        "model_name",
        "margin_multiplier",
        "approval_status",
        "is_active",
        "effective_from",
        "created_by",
        "approved_by",
    )
    list_filter = ("scope_type", "approval_status", "subscription_tier", "is_active")
    list_select_related = ("provider", "created_by", "approved_by")
    search_fields = ("model_name", "provider__name", "reason", "created_by__email", "=id")
    date_hierarchy = "effective_from"
    autocomplete_fields = ("provider",)
    readonly_fields = ("approval_status", "approved_by", "approved_at", "created_by", "created_at", "updated_at")
    actions = [approve_pricing_changes, reject_pricing_changes]

    def has_approve_permission(self, request):
        return request.user.has_perm("credits.approve_pricingconfig")


@admin.register(MarginAuditLog)
class MarginAuditLogAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "pricing_config", "change_type", "changed_by", "old_multiplier", "new_multiplier")
    list_filter = ("change_type",)
    list_select_related = ("pricing_config", "changed_by")
    search_fields = ("changed_by__email", "reason", "=pricing_config__id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(CreditAllocation)
class CreditAllocationAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "user", "amount", "source", "period_start", "period_end", "expires_at", "granted_by")
    list_filter = ("source",)
    list_select_related = ("user", "granted_by")
    search_fields = ("user__email", "reason", "subscription__stripe_subscription_id", "=id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(UserCreditBalance)
class UserCreditBalanceAdmin(GrantCreditsPermission, ReadOnlyHistoryAdmin):
    list_display = ("user", "amount", "last_deduction_at", "last_deduction_amount", "updated_at")
    list_select_related = ("user",)
    search_fields = ("user__email",)
    ordering = ("-updated_at",)
    actions = [grant_credits]


@admin.register(UserCreditSource)
class UserCreditSourceAdmin(ReadOnlyHistoryAdmin):
    list_display = ("created_at", "user", "source", "original_amount", "remaining", "expires_at", "expired_at")
    list_filter = ("source", ("expires_at", admin.EmptyFieldListFilter))
    list_select_related = ("user",)
    search_fields = ("user__email", "=allocation__id", "=id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(CreditDeductionLedger)
class CreditDeductionLedgerAdmin(ReadOnlyModelAdmin):
    list_display = (
        "created_at",
        "user",
        "reason",
        "amount",
        "balance_before",
        "balance_after",
        "status",
        "request_id",
    )
    list_filter = ("reason", "status")
    list_select_related = ("user",)
    search_fields = ("user__email", "=request_id", "=id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = [reverse_deductions]

    def has_reverse_permission(self, request):
        return request.user.has_perm("credits.reverse_deduction")


@admin.register(CreditConsumption)
class CreditConsumptionAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "deduction", "source", "amount")
    list_select_related = ("deduction", "source")
    search_fields = ("deduction__user__email", "=deduction__id", "=deduction__request_id", "=source__id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(CreditHold)
class CreditHoldAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "user", "hold_id", "amount", "captured_amount", "status", "expires_at")
    list_filter = ("status",)
    list_select_related = ("user",)
    search_fields = ("user__email", "=hold_id", "=request_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(TokenUsageLedger)
class TokenUsageLedgerAdmin(ReadOnlyModelAdmin):
    list_display = (
        "created_at",
        "user",
        "provider",
        "model_name",
        "request_type",
        "total_tokens",
        "vendor_cost",
        "margin_multiplier",
        "credits_deducted",
        "status",
        "is_byok",
    )
    list_filter = ("status", "request_type", "is_byok", "provider")
    list_select_related = ("user", "provider")
    search_fields = ("user__email", "=request_id", "model_name")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(TokenUsageDailySummary)
class TokenUsageDailySummaryAdmin(ReadOnlyModelAdmin):
    list_display = (
        "summary_date",
        "user",
        "total_requests",
        "total_input_tokens",
        "total_output_tokens",
        "total_vendor_cost",
        "total_credits_deducted",
        "total_gross_margin",
    )
    list_select_related = ("user",)
    search_fields = ("user__email",)
    date_hierarchy = "summary_date"
    ordering = ("-summary_date",)


@admin.register(CreditUsageDailySummary)
class CreditUsageDailySummaryAdmin(ReadOnlyModelAdmin):
    list_display = (
        "summary_date",
        "user",
        "total_deductions",
        "total_requests",
        "total_credits_granted",
        "total_credits_expired",
        "total_vendor_cost",
        "total_gross_margin",
    )
    list_select_related = ("user",)
    search_fields = ("user__email",)
    date_hierarchy = "summary_date"
    ordering = ("-summary_date",)
