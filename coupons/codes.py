"""Stable codes of coupons. A refused validation or redemption names its reason with one of these:
`reason_code` of `coupons/validate/`, the problem `code` of a refused redeem, and the
`failure_reason` stored on the failed redemption. Clients and tests match on them."""

from enum import StrEnum


class Reason(StrEnum):
    """In the order validation checks them (SPEC 4), then the checks of each effect."""

    COUPON_NOT_FOUND = "coupon_not_found"
    COUPON_DELETED = "coupon_deleted"
    COUPON_INACTIVE = "coupon_inactive"
    COUPON_NOT_YET_VALID = "coupon_not_yet_valid"
    COUPON_EXPIRED = "coupon_expired"
    CAMPAIGN_INACTIVE = "campaign_inactive"
    CAMPAIGN_NOT_RUNNING = "campaign_not_running"
    CAMPAIGN_BUDGET_EXHAUSTED = "campaign_budget_exhausted"
    MAX_USES_REACHED = "coupon_max_uses_reached"
    USER_LIMIT_REACHED = "coupon_user_limit_reached"
    TIER_NOT_ELIGIBLE = "tier_not_eligible"
    BILLING_CYCLE_NOT_ELIGIBLE = "billing_cycle_not_eligible"
    MINIMUM_PURCHASE_NOT_MET = "minimum_purchase_not_met"
    NEW_CUSTOMERS_ONLY = "new_customers_only"
    RULE_FIRST_TIME_USER = "rule_first_time_user"
    EMAIL_NOT_VERIFIED = "email_not_verified"
    RULE_EMAIL_DOMAIN = "rule_email_domain"
    RULE_MIN_ACCOUNT_AGE = "rule_min_account_age"
    RULE_MAX_REDEMPTIONS_PER_IP = "rule_max_redemptions_per_ip"
    FRAUD_BLOCKED = "fraud_blocked"
    # What the effect needs.
    NO_SUBSCRIPTION_TO_DISCOUNT = "no_subscription_to_discount"
    DISCOUNT_ALREADY_PENDING = "discount_already_pending"
    APPLY_AT_SUBSCRIPTION_START = "apply_at_subscription_start"
    NO_SUBSCRIPTION_TO_EXTEND = "no_subscription_to_extend"
    NOT_A_CHECKOUT_DISCOUNT = "coupon_not_a_checkout_discount"
    # A checkout that held a coupon and was never paid.
    CHECKOUT_ABANDONED = "checkout_abandoned"


class ErrorCode(StrEnum):
    """Problem codes of the staff endpoints."""

    COUPON_NOT_FOUND = "coupon_not_found"
    COUPON_DELETED = "coupon_deleted"
    CODE_TAKEN = "coupon_code_taken"
    INVALID_COUPON = "invalid_coupon"
    CAMPAIGN_NOT_FOUND = "campaign_not_found"
    CAMPAIGN_HAS_REDEMPTIONS = "campaign_has_redemptions"
    COUPON_IN_ANOTHER_CAMPAIGN = "coupon_in_another_campaign"
    COUPON_NOT_IN_CAMPAIGN = "coupon_not_in_campaign"
    INVALID_CAMPAIGN = "invalid_campaign"
    DETECTION_NOT_FOUND = "fraud_detection_not_found"
    ALREADY_RESOLVED = "fraud_detection_already_resolved"
    RESOLUTION_REQUIRED = "resolution_required"
    TOO_MANY_CODES = "too_many_codes"
