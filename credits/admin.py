"""Vendor prices and margins are edited here; balances, grants and ledgers are read-only: they change
only through the credit services. A balance's and a grant's history is the ledger, linked from their
pages; django-auditlog does not track them (credits.apps)."""

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import AdminSplitDateTime
from django.urls import reverse
from django.utils.html import format_html_join

from audit.admin_base import AuditedModelAdmin, CreatorStampAdminMixin, ReadOnlyHistoryAdmin, ReadOnlyModelAdmin
from audit.admin_export import CsvExportMixin
from billing_project.admin_actions import ReasonForm, form_action
from billing_project.errors import DomainError
from credits.models import (
    PER_1K_PRICE_FIELDS,
    AutoRecharge,
    CreditAllocation,
    CreditConsumption,
    CreditDeductionLedger,
    CreditHold,
    CreditPack,
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
from credits.selectors import credit_pack_sold, model_price_history
from credits.services import (
    budget_set_by_staff,
    credit_grant_by_staff,
    deduction_reverse,
    pricing_config_approve,
    pricing_config_reject,
)
from credits.services.grants import GRANTABLE_BY_STAFF
from credits.services.packs import PACK_TERMS, credit_pack_terms_check, credit_pack_terms_locked
from credits.services.pricing_changes import model_price_create, price_book_normalized, price_start_check
from credits.services.recharge import AutoRechargeChange, auto_recharge_set


class GrantCreditsForm(forms.Form):
    amount = forms.IntegerField(min_value=1, max_value=1_000_000_000, help_text="Credits (1 credit = USD 0.001).")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=1000)
    source = forms.ChoiceField(choices=[(value, value) for value in GRANTABLE_BY_STAFF])
    expires_at = forms.SplitDateTimeField(
        required=False, widget=AdminSplitDateTime, help_text="Empty: the credits never expire."
    )


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


class BudgetForm(forms.Form):
    monthly_credits = forms.IntegerField(
        required=False, min_value=1, max_value=2_147_483_647, help_text="Credits per calendar month (UTC); empty: none."
    )
    hard_limit = forms.BooleanField(
        required=False, help_text="Refuse usage (402 budget_exceeded) once the month's spend reaches the budget."
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("hard_limit") and cleaned.get("monthly_credits") is None:
            raise forms.ValidationError("A hard limit needs a monthly budget.")
        return cleaned


def _budget(*, request, obj, monthly_credits, hard_limit):
    budget = budget_set_by_staff(
        user_id=obj.user_id, monthly_credits=monthly_credits, hard_limit=hard_limit, actor=request.user
    )
    if budget.monthly_credits is None:
        return f"{obj.user}: no budget"
    limit = "hard limit" if budget.hard_limit else "notifications only"
    return f"{obj.user}: {budget.monthly_credits} credits a month ({limit}), {budget.spent_this_month} spent this month"


set_budget = form_action(
    form_class=BudgetForm,
    description="Set the monthly budget",
    perform=_budget,
    name="set_budget",
    permissions=["budget"],
    describe=lambda balance: f"{balance.user}: budget {balance.budget_monthly_credits or 'none'}",
)


def _auto_recharge_switch(*, request, obj, enabled: bool) -> str:
    change = AutoRechargeChange(
        enabled=enabled, threshold=obj.threshold, pack_id=obj.pack_id, monthly_cap=obj.monthly_cap
    )
    setting = auto_recharge_set(user=obj.user, change=change, actor=request.user, audited=True)
    return f"{obj.user}: {'on' if setting.enabled else 'off'}"


def _describe_auto_recharge(setting: AutoRecharge) -> str:
    state = "paused" if setting.paused_at else ("on" if setting.enabled else "off")
    return f"{setting.user}: {state}, below {setting.threshold} credits buys {setting.pack}"


auto_recharge_turn_off = form_action(
    form_class=forms.Form,  # a confirmation page
    description="Turn the selected auto-recharges off",
    perform=lambda *, request, obj: _auto_recharge_switch(request=request, obj=obj, enabled=False),
    name="auto_recharge_turn_off",
    permissions=["switch"],
    describe=_describe_auto_recharge,
)
auto_recharge_turn_on = form_action(
    form_class=forms.Form,
    description="Turn the selected auto-recharges on (resumes paused ones)",
    perform=lambda *, request, obj: _auto_recharge_switch(request=request, obj=obj, enabled=True),
    name="auto_recharge_turn_on",
    permissions=["switch"],
    describe=_describe_auto_recharge,
)


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


def _pricing_change(config: PricingConfig) -> str:
    """What approving a pricing change does: its scope, the margin before and after, from when."""
    scope = " / ".join(str(part) for part in (config.subscription_tier, config.provider, config.model_name) if part)
    before = f"x{config.previous_multiplier}" if config.previous_multiplier is not None else "none in this scope"
    return (
        f"{config.get_scope_type_display()} {scope}".strip()
        + f": margin {before} -> x{config.margin_multiplier}, effective {config.effective_from:%Y-%m-%d %H:%M %Z}"
    )


def _reject(*, request, obj, reason):
    rejected = pricing_config_reject(config_id=obj.pk, actor=request.user, reason=reason)
    return f"rejected {_pricing_change(rejected)}"


reject_pricing_changes = form_action(
    form_class=ReasonForm,
    description="Reject the selected pricing changes",
    perform=_reject,
    name="reject_changes",
    permissions=["approve"],
    describe=_pricing_change,
)


def _approve(*, request, obj):
    approved = pricing_config_approve(config_id=obj.pk, actor=request.user)
    return f"approved {_pricing_change(approved)}"


approve_pricing_changes = form_action(
    form_class=forms.Form,  # a confirmation page: approving puts a margin in force
    description="Approve the selected pricing changes",
    perform=_approve,
    name="approve_pricing_changes",
    permissions=["approve"],
    describe=_pricing_change,
)


@admin.register(Provider)
class ProviderAdmin(AuditedModelAdmin):
    list_display = ("name", "display_name", "api_type", "vendor_family", "is_enabled")
    list_filter = ("api_type", "vendor_family", "is_enabled")
    search_fields = ("name", "display_name")
    readonly_fields = ("created_at", "updated_at")


# What staff give for a new price; the rest (the previous price, the change, when it ends) follows from the history.
NEW_PRICE_FIELDS = (
    "provider",
    "model_name",
    "region",
    "vendor_model_id",
    *PER_1K_PRICE_FIELDS,
    "context_tiers",
    "service_tiers",
    "request_fees",
    "effective_from",
    "description",
)
# A price in the history is never edited (the price a past request paid stays visible): it can be retired.
EDITABLE_ON_A_PRICE = ("is_active", "description")


class ModelPriceForm(forms.ModelForm):
    """A new price, checked as the API checks one: a malformed dimension never reaches the price
    book, and a model's history only grows forward."""

    class Meta:
        model = ModelProviderPricing
        fields = (*NEW_PRICE_FIELDS, "is_active")

    def clean(self):
        cleaned = super().clean()
        if not self.instance._state.adding or self.errors:
            return cleaned
        try:
            price_book_normalized(
                context_tiers=cleaned.get("context_tiers"),
                service_tiers=cleaned.get("service_tiers"),
                request_fees=cleaned.get("request_fees"),
            )
            history = model_price_history(
                provider=cleaned["provider"], model_name=cleaned["model_name"], region=cleaned.get("region", "")
            )
            price_start_check(latest=history.last(), effective_from=cleaned["effective_from"])
        except DomainError as refused:
            raise forms.ValidationError(refused.detail) from refused
        return cleaned


@admin.register(ModelProviderPricing)
class ModelProviderPricingAdmin(AuditedModelAdmin):
    """New prices go through the pricing service, as from the API and the import: the price in
    force ends where the new one starts, and the change is written to the margin log."""

    form = ModelPriceForm
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

    def get_fields(self, request, obj=None):
        if obj is None:
            return NEW_PRICE_FIELDS
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.readonly_fields
        return [field.name for field in ModelProviderPricing._meta.fields if field.name not in EDITABLE_ON_A_PRICE]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        created = model_price_create(
            actor=request.user, **{name: form.cleaned_data[name] for name in NEW_PRICE_FIELDS}
        ).price
        # The admin goes on with `obj` (its message, log entry and redirect): make it the stored row.
        for field in ModelProviderPricing._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        obj._state.adding = False


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


class CreditPackForm(forms.ModelForm):
    """A pack checked as the staff API checks one: a price Stripe can charge in its currency, and
    the terms of a pack already paid for left as sold."""

    class Meta:
        model = CreditPack
        fields = ("name", *PACK_TERMS, "is_active")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            if "price" in cleaned:
                cleaned["currency"] = credit_pack_terms_check(price=cleaned["price"], currency=cleaned["currency"])
            if not self.instance._state.adding:
                stored = CreditPack.objects.get(pk=self.instance.pk)
                changes = {name: cleaned[name] for name in PACK_TERMS if name in cleaned}
                credit_pack_terms_locked(pack=stored, changes=changes)
        except DomainError as refused:
            raise forms.ValidationError(refused.detail) from refused
        return cleaned


@admin.register(CreditPack)
class CreditPackAdmin(AuditedModelAdmin):
    """Packs on sale. Once a purchase is paid, a pack's terms are read-only and it cannot be deleted:
    staff retire it (untick active) and add another, so what each customer bought stays as sold."""

    form = CreditPackForm
    list_display = ("name", "credits", "price", "currency", "credit_expiry_days", "is_active", "created_at")
    list_filter = ("is_active", "currency")
    search_fields = ("name", "=id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = ("created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and credit_pack_sold(pack=obj):
            return (*PACK_TERMS, *self.readonly_fields)
        return self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        if obj is not None and credit_pack_sold(pack=obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        # A bulk delete would not ask each pack whether it was sold.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


@admin.register(MarginAuditLog)
class MarginAuditLogAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "pricing_config", "change_type", "changed_by", "old_multiplier", "new_multiplier")
    list_filter = ("change_type",)
    list_select_related = ("pricing_config", "changed_by")
    search_fields = ("changed_by__email", "reason", "=pricing_config__id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(CreditAllocation)
class CreditAllocationAdmin(CsvExportMixin, ReadOnlyModelAdmin):
    list_display = ("created_at", "user", "amount", "source", "period_start", "period_end", "expires_at", "granted_by")
    list_filter = ("source",)
    list_select_related = ("user", "granted_by")
    search_fields = ("user__email", "reason", "=subscription_id", "=payment_operation_id", "=id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


# A balance's and a grant's history is the ledger (credits.services.accounts): their pages link to it.
LEDGERS = (
    (CreditAllocation, "credits in"),
    (CreditDeductionLedger, "deductions, expiries and reversals"),
    (TokenUsageLedger, "usage"),
    (CreditHold, "holds"),
    (UserCreditSource, "grants"),
)


class LedgerHistoryAdmin(ReadOnlyModelAdmin):
    """Read-only rows whose history is the ledger, linked from their page (not django-auditlog)."""

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "history"]

    @admin.display(description="History (the ledger)")
    def history(self, obj):
        return format_html_join(
            ", ",
            '<a href="{}?user__exact={}">{}</a>',
            (
                (reverse(f"admin:credits_{model._meta.model_name}_changelist"), obj.user_id, label)
                for model, label in LEDGERS
            ),
        )


@admin.register(UserCreditBalance)
class UserCreditBalanceAdmin(GrantCreditsPermission, LedgerHistoryAdmin):
    list_display = (
        "user",
        "amount",
        "tier",
        "budget_monthly_credits",
        "budget_hard_limit",
        "budget_spent",
        "last_deduction_at",
        "updated_at",
    )
    list_filter = ("tier",)
    list_select_related = ("user",)
    search_fields = ("user__email", "=subscription_id")
    ordering = ("-updated_at",)
    actions = [grant_credits, set_budget]

    def has_budget_permission(self, request):
        # The permission the staff API's budget endpoint asks for; the page itself stays read-only.
        return request.user.has_perm("credits.change_usercreditbalance")


@admin.register(UserCreditSource)
class UserCreditSourceAdmin(CsvExportMixin, LedgerHistoryAdmin):
    list_display = ("created_at", "user", "source", "original_amount", "remaining", "expires_at", "expired_at")
    list_filter = ("source", ("expires_at", admin.EmptyFieldListFilter))
    list_select_related = ("user",)
    search_fields = ("user__email", "=allocation__id", "=id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(CreditDeductionLedger)
class CreditDeductionLedgerAdmin(CsvExportMixin, ReadOnlyModelAdmin):
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
class CreditConsumptionAdmin(CsvExportMixin, ReadOnlyModelAdmin):
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
class TokenUsageLedgerAdmin(CsvExportMixin, ReadOnlyModelAdmin):
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


@admin.register(AutoRecharge)
class AutoRechargeAdmin(ReadOnlyHistoryAdmin):
    """Set by the user or by staff through the API (`admin/credits/auto-recharge/{user_id}/`), which
    checks the pack, the cap and the saved card and keeps the balance row's threshold in step. Staff
    turn settings off and on here (on resumes a paused one), through the same service, audited."""

    list_display = ("user", "enabled", "threshold", "pack", "monthly_cap", "consecutive_failures", "paused_at")
    list_filter = ("enabled", ("paused_at", admin.EmptyFieldListFilter), "pack")
    list_select_related = ("user", "pack")
    search_fields = ("user__email",)
    actions = [auto_recharge_turn_off, auto_recharge_turn_on]

    def has_switch_permission(self, request):
        return request.user.has_perm("credits.change_autorecharge")
