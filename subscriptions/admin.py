from django.contrib import admin
from django.db import models

from audit.admin_base import AuditedModelAdmin, ReadOnlyModelAdmin
from subscriptions.models import (
    BillingInvoice,
    DunningAttempt,
    PaymentTransaction,
    ProrationEvent,
    Subscription,
    TierConfig,
    UserEntitlement,
    WebhookEvent,
)


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
class SubscriptionAdmin(AuditedModelAdmin):
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
    readonly_fields = ("provider_updated_at", "created_at", "updated_at")


@admin.register(BillingInvoice)
class BillingInvoiceAdmin(AuditedModelAdmin):
    list_display = (
        "user",
        "status",
        "amount_due_usd",
        "amount_paid_usd",
        "currency",
        "period_start",
        "period_end",
        "paid_at",
        "stripe_invoice_id",
    )
    list_filter = ("status", "currency")
    list_select_related = ("user",)
    search_fields = ("user__email", "stripe_invoice_id", "subscription__stripe_subscription_id", "=id")
    date_hierarchy = "period_start"
    autocomplete_fields = ("user", "subscription")
    readonly_fields = ("created_at", "updated_at")
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(PaymentTransaction)
class PaymentTransactionAdmin(AuditedModelAdmin):
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
    readonly_fields = ("created_at", "updated_at")


@admin.register(DunningAttempt)
class DunningAttemptAdmin(AuditedModelAdmin):
    list_display = ("invoice", "user", "attempt_number", "scheduled_at", "attempted_at", "result")
    list_filter = ("result", "attempt_number")
    list_select_related = ("invoice", "user")
    search_fields = ("user__email", "invoice__stripe_invoice_id", "=invoice__id")
    date_hierarchy = "scheduled_at"
    autocomplete_fields = ("user", "invoice", "subscription")
    readonly_fields = ("created_at", "updated_at")


@admin.register(UserEntitlement)
class UserEntitlementAdmin(AuditedModelAdmin):
    list_display = ("user", "tier", "activated_at", "expires_at")
    list_filter = ("tier",)
    list_select_related = ("user",)
    search_fields = ("user__email",)
    date_hierarchy = "activated_at"
    autocomplete_fields = ("user",)
    readonly_fields = ("created_at", "updated_at")


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
    readonly_fields = ("created_at", "updated_at")


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyModelAdmin):
    list_display = ("received_at", "provider", "event_id", "event_type", "status", "attempts", "processed_at")
    list_filter = ("provider", "status", "event_type")
    search_fields = ("=event_id", "event_type")
    date_hierarchy = "received_at"
    ordering = ("-received_at",)
