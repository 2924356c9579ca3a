"""Payments in the console: operations (with the stuck ones first to hand), payments received with
their refunds and disputes, webhook events, payment events and customers. All read-only: money moves
only through the services."""

from django import forms
from django.contrib import admin

from audit.admin_base import ReadOnlyModelAdmin
from audit.admin_export import CsvExportMixin
from billing_project.admin_actions import form_action
from payments.models import (
    STUCK_STATES,
    Payment,
    PaymentEvent,
    PaymentOperation,
    StripeCustomer,
    WebhookEvent,
    WebhookStatus,
)
from payments.services.inbox import webhook_replay
from payments.services.reconcile import operation_reconcile


def _webhook_replay(*, request, obj):
    event = webhook_replay(event_id=obj.event_id, actor=request.user)
    return f"{event.event_id}: {event.status}"


def _operation_reconcile(*, request, obj):
    operation = operation_reconcile(operation_id=obj.pk, actor=request.user)
    return f"{operation.kind} {operation.pk}: {operation.state}"


replay_webhook_events = form_action(
    form_class=forms.Form,
    description="Process the selected webhook events again",
    perform=_webhook_replay,
    name="replay_webhook_events",
    permissions=["replay"],
)
reconcile_operations = form_action(
    form_class=forms.Form,
    description="Settle the selected operations now from what Stripe says",
    perform=_operation_reconcile,
    name="reconcile_operations",
    permissions=["reconcile"],
)


class StuckFilter(admin.SimpleListFilter):
    title = "needs a look"
    parameter_name = "stuck"

    def lookups(self, request, model_admin):
        return [("yes", "Waiting on Stripe or needing attention")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(state__in=STUCK_STATES)
        return queryset


@admin.register(PaymentOperation)
class PaymentOperationAdmin(CsvExportMixin, ReadOnlyModelAdmin):
    list_display = (
        "created_at",
        "kind",
        "state",
        "user",
        "amount_decimal",
        "currency",
        "cleanup_due",
        "attempts",
        "last_error",
    )
    list_filter = (StuckFilter, "state", "kind", "provider", "cleanup_due")
    list_select_related = ("user",)
    search_fields = (
        "=id",
        "user__email",
        "=subject_id",
        "=stripe_invoice_id",
        "=stripe_checkout_session_id",
        "=stripe_payment_intent_id",
    )
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = [reconcile_operations]

    @admin.display(description="amount")
    def amount_decimal(self, obj):
        return obj.amount_decimal

    def has_reconcile_permission(self, request):
        return request.user.has_perm("payments.change_paymentoperation")


class UnmatchedFilter(admin.SimpleListFilter):
    title = "needs linking"
    parameter_name = "unmatched"

    def lookups(self, request, model_admin):
        return [("yes", "About something not known here (unmatched)")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(status=WebhookStatus.UNMATCHED)
        return queryset


@admin.register(Payment)
class PaymentAdmin(CsvExportMixin, ReadOnlyModelAdmin):
    list_display = (
        "paid_at",
        "kind",
        "user",
        "amount_major",
        "amount_refunded_major",
        "currency",
        "status",
        "dispute_status",
    )
    list_filter = ("status", "dispute_status", "currency", "kind", "provider")
    list_select_related = ("user",)
    search_fields = (
        "=id",
        "user__email",
        "=stripe_payment_intent_id",
        "=stripe_charge_id",
        "=stripe_invoice_id",
        "=stripe_checkout_session_id",
    )
    date_hierarchy = "paid_at"
    ordering = ("-paid_at",)

    @admin.display(description="amount")
    def amount_major(self, obj):
        return obj.amount_major

    @admin.display(description="refunded")
    def amount_refunded_major(self, obj):
        return obj.amount_refunded_major


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyModelAdmin):
    """Every Stripe event as received. "Needs linking" lists the unmatched ones with their reason;
    once their object is known here, "Process again" applies them (audited)."""

    list_display = (
        "received_at",
        "provider",
        "event_id",
        "event_type",
        "object_id",
        "status",
        "unmatched_reason",
        "attempts",
        "processed_at",
    )
    list_filter = (UnmatchedFilter, "provider", "status", "event_type")
    search_fields = ("=event_id", "=object_id", "event_type")
    date_hierarchy = "received_at"
    ordering = ("-received_at",)
    actions = [replay_webhook_events]

    def has_replay_permission(self, request):
        return request.user.has_perm("payments.change_webhookevent")


@admin.register(PaymentEvent)
class PaymentEventAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "event_type", "user", "plan_code", "amount", "currency", "invoice_id")
    list_filter = ("event_type",)
    list_select_related = ("user",)
    search_fields = ("user__email", "customer_id", "invoice_id", "subscription_id", "=id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(StripeCustomer)
class StripeCustomerAdmin(ReadOnlyModelAdmin):
    list_display = ("stripe_customer_id", "user", "created_at")
    list_select_related = ("user",)
    search_fields = ("=stripe_customer_id", "user__email")
