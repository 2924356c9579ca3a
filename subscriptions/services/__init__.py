"""Writes of the subscriptions app, one business operation per function (see each module)."""

from subscriptions.services.accounts import account_register, tier_catalog_seed
from subscriptions.services.billing import (
    dunning_run,
    invoice_paid,
    invoice_payment_failed,
    payment_refunded,
    subscription_allocate_current,
    subscription_period_roll_over,
    subscriptions_due_for_roll_over,
    subscriptions_to_allocate,
)
from subscriptions.services.entitlements import entitlement_activate, tier_config_get
from subscriptions.services.lifecycle import (
    CHECKOUT_KIND_SUBSCRIPTION,
    TRANSITIONS,
    StartResult,
    TierChangeQuote,
    subscription_cancel,
    subscription_checkout_complete,
    subscription_start,
    subscription_start_free,
    subscription_status_change,
    subscription_transition,
    tier_change,
    tier_change_preview,
)
from subscriptions.services.trials import (
    trial_expire,
    trial_reminder_resend,
    trial_reminder_send,
    trials_due_a_reminder,
    trials_ended,
)
from subscriptions.services.webhooks import InvalidSignature, WebhookProcessingFailed, webhook_receive, webhook_replay

__all__ = [
    "CHECKOUT_KIND_SUBSCRIPTION",
    "TRANSITIONS",
    "InvalidSignature",
    "StartResult",
    "TierChangeQuote",
    "WebhookProcessingFailed",
    "account_register",
    "dunning_run",
    "entitlement_activate",
    "invoice_paid",
    "invoice_payment_failed",
    "payment_refunded",
    "subscription_allocate_current",
    "subscription_cancel",
    "subscription_checkout_complete",
    "subscription_period_roll_over",
    "subscription_start",
    "subscription_start_free",
    "subscription_status_change",
    "subscription_transition",
    "subscriptions_due_for_roll_over",
    "subscriptions_to_allocate",
    "tier_catalog_seed",
    "tier_change",
    "tier_change_preview",
    "tier_config_get",
    "trial_expire",
    "trial_reminder_resend",
    "trial_reminder_send",
    "trials_due_a_reminder",
    "trials_ended",
    "webhook_receive",
    "webhook_replay",
]
