"""Vocabulary shared by several apps. Lives here so that lower apps (credits) can use the tier
names without importing subscriptions, which sits above them."""

from django.db import models


class SubscriptionTier(models.TextChoices):
    FREE = "free", "Free"
    PRO = "pro", "Pro"
    PRO_MAX = "pro_max", "Pro Max"
    ENTERPRISE_PRO = "enterprise_pro", "Enterprise Pro"
    ENTERPRISE_MAX = "enterprise_max", "Enterprise Max"
    PERPETUAL = "perpetual", "Perpetual"


class BillingCycle(models.TextChoices):
    MONTHLY = "monthly", "Monthly"
    ANNUAL = "annual", "Annual"


class EventType(models.TextChoices):
    """What an outbound event (and a notification) says happened. The part before the dot is the
    family receivers subscribe to; the value is the event's stable `type` in every payload."""

    SUBSCRIPTION_CREATED = "subscription.created"
    SUBSCRIPTION_UPDATED = "subscription.updated"
    SUBSCRIPTION_CANCELLED = "subscription.cancelled"
    SUBSCRIPTION_TRIAL_ENDING = "subscription.trial_ending"
    INVOICE_PAID = "invoice.paid"
    INVOICE_PAYMENT_FAILED = "invoice.payment_failed"
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_ACTION_REQUIRED = "payment.action_required"
    PAYMENT_REFUNDED = "payment.refunded"
    CREDITS_GRANTED = "credits.granted"
    CREDITS_BALANCE_LOW = "credits.balance_low"
    CREDITS_BALANCE_DEPLETED = "credits.balance_depleted"
    CREDITS_BUDGET_THRESHOLD = "credits.budget_threshold"
    CREDITS_PURCHASE_SUCCEEDED = "credits.purchase_succeeded"
    CREDITS_PURCHASE_FAILED = "credits.purchase_failed"
    CREDITS_RECHARGE_SUCCEEDED = "credits.recharge_succeeded"
    CREDITS_RECHARGE_FAILED = "credits.recharge_failed"
    CREDITS_RECHARGE_PAUSED = "credits.recharge_paused"
    LICENSE_CREATED = "license.created"
    LICENSE_DEVICE_LIMIT_REACHED = "license.device_limit_reached"
    COUPON_REDEEMED = "coupon.redeemed"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"


EVENT_FAMILIES = sorted({value.split(".")[0] for value in EventType.values})
