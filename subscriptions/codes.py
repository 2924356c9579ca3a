"""Stable problem codes of subscriptions: clients and tests match on them."""

from enum import StrEnum


class ErrorCode(StrEnum):
    EMAIL_TAKEN = "email_taken"
    REASON_REQUIRED = "reason_required"
    PAYMENT_NOT_FOUND = "payment_not_found"
    PAYMENT_NOT_REFUNDABLE = "payment_not_refundable"
    REFUND_AMOUNT_INVALID = "refund_amount_invalid"
    SUBSCRIPTION_NOT_FOUND = "subscription_not_found"
    INVALID_TRANSITION = "invalid_transition"
    TIER_NOT_SUBSCRIBABLE = "tier_not_subscribable"
    SUBSCRIPTION_EXISTS = "subscription_exists"
    EMAIL_NOT_VERIFIED = "email_not_verified"
    COUPON_NOT_FOR_TRIAL = "coupon_not_for_trial"
    SUBSCRIPTION_NOT_ACTIVE = "subscription_not_active"
    START_A_SUBSCRIPTION = "start_a_subscription"
    SAME_TIER = "same_tier"
    PAYMENT_METHOD_REQUIRED = "payment_method_required"
    PAYMENT_IN_PROGRESS = "payment_in_progress"
    SUBSCRIPTION_NOT_LIVE = "subscription_not_live"
    FREE_TIER_NOT_CANCELLABLE = "free_tier_not_cancellable"
    IMMEDIATE_CANCEL_STAFF_ONLY = "immediate_cancel_staff_only"
    TIER_NOT_AVAILABLE = "tier_not_available"
    NOT_IN_TRIAL = "not_in_trial"
    NO_SUBSCRIPTION = "no_subscription"
