from django import forms
from django.contrib import admin
from django.utils.html import format_html_join

from audit.admin_base import AuditedModelAdmin, ReadOnlyHistoryAdmin
from audit.admin_export import CsvExportMixin
from billing_project.admin_actions import ReasonForm, form_action
from payments.admin import PaymentAdmin
from payments.models import Payment
from subscriptions import services
from subscriptions.models import (
    BillingInvoice,
    DunningAttempt,
    PaymentTransaction,
    ProrationEvent,
    Subscription,
    SubscriptionStatus,
    TierConfig,
    UserEntitlement,
)


def service_owned_fields(model) -> list[str]:
    """Every field of a row the services write (tier, prices, credits, periods, status, amounts):
    shown, never typed over; it changes through the actions, which call the services."""
    return [field.name for field in model._meta.fields]


class StatusChangeForm(ReasonForm):
    status = forms.ChoiceField(choices=SubscriptionStatus.choices, help_text="Only the state machine's moves apply.")
    field_order = ["status", "reason"]


def _status_change(*, request, obj, status, reason):
    services.subscription_status_change(subscription_id=obj.pk, status=status, reason=reason, actor=request.user)
    return f"{obj.user}: {status}"


def _trial_reminder_resend(*, request, obj):
    days_left = services.trial_reminder_resend(subscription_id=obj.pk, actor=request.user)
    return f"{obj.user}: reminder sent ({days_left} days left)"


class RefundForm(ReasonForm):
    amount_usd = forms.DecimalField(
        max_digits=12,
        decimal_places=2,
        min_value=0.01,
        required=False,
        label="Amount",
        help_text="In each payment's own currency; leave empty to refund what is left of each selected payment.",
    )
    field_order = ["amount_usd", "reason"]


def _payment_refund(*, request, obj, amount_usd, reason):
    operation = services.payment_refund(payment_id=obj.pk, amount_usd=amount_usd, reason=reason, actor=request.user)
    return f"{obj}: refund {operation.state}"


change_subscription_status = form_action(
    form_class=StatusChangeForm,
    description="Change the status of the selected subscriptions",
    perform=_status_change,
    name="change_subscription_status",
    permissions=["change"],
)
refund_payments = form_action(
    form_class=RefundForm,
    description="Refund the selected payments",
    perform=_payment_refund,
    name="refund_payments",
    permissions=["refund"],
)
resend_trial_reminder = form_action(
    form_class=forms.Form,
    description="Send the trial reminder e-mail again",
    perform=_trial_reminder_resend,
    name="resend_trial_reminder",
    permissions=["change"],
)


class PushesTierToCredits:
    """Console edits of a subscription reach credits' copy of the user's tier in the same transaction
    (see subscriptions.services.credits_tier_push)."""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        services.credits_tier_push(user=obj.user)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        services.credits_tier_push(user=obj.user)


@admin.register(TierConfig)
class TierConfigAdmin(AuditedModelAdmin):
    list_display = (
        "tier",
        "display_name",
        "monthly_price_usd",
        "annual_price_usd",
        "one_time_price_usd",
        "monthly_credit_allocation",
        "trial_days",
        "is_active",
        "sort_order",
    )
    list_filter = ("is_active",)
    search_fields = ("tier", "display_name")
    readonly_fields = ("created_at", "updated_at")


@admin.register(Subscription)
class SubscriptionAdmin(PushesTierToCredits, AuditedModelAdmin):
    list_display = (
        "user",
        "tier",
        "billing_cycle",
        "status",
        "base_price_usd",
        "current_period_start",
        "current_period_end",
        "cancel_at_period_end",
        "stripe_subscription_id",
    )
    list_filter = ("status", "tier", "billing_cycle", "cancel_at_period_end")
    list_select_related = ("user",)
    search_fields = ("user__email", "stripe_customer_id", "stripe_subscription_id", "=id")
    date_hierarchy = "current_period_start"
    autocomplete_fields = ("user",)
    actions = [change_subscription_status, resend_trial_reminder]

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return service_owned_fields(self.model)


@admin.register(BillingInvoice)
class BillingInvoiceAdmin(CsvExportMixin, AuditedModelAdmin):
    list_display = (
        "user",
        "status",
        "amount_due_usd",
        "amount_paid_usd",
        "currency",
        "period_start",
        "period_end",
        "paid_at",
        "number",
        "documents",
        "stripe_invoice_id",
    )
    list_filter = ("status", "currency")
    list_select_related = ("user",)
    search_fields = ("user__email", "number", "stripe_invoice_id", "subscription__stripe_subscription_id", "=id")
    date_hierarchy = "period_start"
    autocomplete_fields = ("user", "subscription")

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return service_owned_fields(self.model)

    @admin.display(description="Stripe documents")
    def documents(self, invoice):
        documents = ((invoice.hosted_invoice_url, "page"), (invoice.invoice_pdf, "PDF"))
        links = [(url, label) for url, label in documents if url]
        return format_html_join(" · ", '<a href="{}" target="_blank" rel="noopener">{}</a>', links) or "-"


@admin.register(PaymentTransaction)
class PaymentTransactionAdmin(CsvExportMixin, AuditedModelAdmin):
    list_display = (
        "created_at",
        "user",
        "amount_usd",
        "refunded_amount_usd",
        "currency",
        "status",
        "payment_method_type",
        "stripe_payment_intent_id",
        "completed_at",
    )
    list_filter = ("status", "payment_method_type", "currency")
    list_select_related = ("user",)
    search_fields = ("user__email", "stripe_payment_intent_id", "stripe_charge_id", "invoice__stripe_invoice_id", "=id")
    date_hierarchy = "created_at"
    autocomplete_fields = ("user", "invoice", "subscription")
    actions = [refund_payments]

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return service_owned_fields(self.model)

    def has_refund_permission(self, request):
        return request.user.has_perm("subscriptions.refund_payment")


class RefundablePaymentAdmin(PaymentAdmin):
    """The money received, with the refund action for credit purchases (a pack, an auto-recharge);
    an invoice's payment is refunded from the payment transactions. The refund service lives in this
    app, above payments, so the action is added here."""

    actions = [*(PaymentAdmin.actions or []), refund_payments]

    def has_refund_permission(self, request):
        return request.user.has_perm("subscriptions.refund_payment")


admin.site.unregister(Payment)
admin.site.register(Payment, RefundablePaymentAdmin)


@admin.register(DunningAttempt)
class DunningAttemptAdmin(ReadOnlyHistoryAdmin):
    """Scheduled, run and settled by the dunning job and the payment webhooks only."""

    list_display = ("invoice", "user", "attempt_number", "scheduled_at", "attempted_at", "result")
    list_filter = ("result", "attempt_number")
    list_select_related = ("invoice", "user")
    search_fields = ("user__email", "invoice__stripe_invoice_id", "=invoice__id")
    date_hierarchy = "scheduled_at"


@admin.register(UserEntitlement)
class UserEntitlementAdmin(ReadOnlyHistoryAdmin):
    """Follows the subscription (its start, tier change, status change and end, through their actions)."""

    list_display = ("user", "tier", "activated_at", "expires_at")
    list_filter = ("tier",)
    list_select_related = ("user",)
    search_fields = ("user__email",)
    date_hierarchy = "activated_at"


@admin.register(ProrationEvent)
class ProrationEventAdmin(AuditedModelAdmin):
    list_display = (
        "effective_date",
        "user",
        "from_tier",
        "to_tier",
        "change_type",
        "net_charge_usd",
        "credits_adjustment",
        "status",
    )
    list_filter = ("status", "change_type", "from_tier", "to_tier")
    list_select_related = ("user",)
    search_fields = ("user__email", "subscription__stripe_subscription_id", "=subscription__id")
    date_hierarchy = "effective_date"
    autocomplete_fields = ("user", "subscription")

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return service_owned_fields(self.model)
