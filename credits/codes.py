"""Stable problem codes of credits (also the `code` of each refused event of a usage batch): clients
and tests match on them."""

from enum import StrEnum


class ErrorCode(StrEnum):
    INSUFFICIENT_CREDITS = "insufficient_credits"
    UNKNOWN_USER = "unknown_user"
    REQUEST_ID_CONFLICT = "request_id_conflict"
    UNKNOWN_PROVIDER = "unknown_provider"
    UNKNOWN_MODEL = "unknown_model"
    UNPRICED_FEE = "unpriced_fee"
    UNKNOWN_HOLD = "unknown_hold"
    HOLD_ALREADY_CAPTURED = "hold_already_captured"
    HOLD_ID_CONFLICT = "hold_id_conflict"
    UNRECORDABLE_EVENT = "unrecordable_event"
    INVALID_AMOUNT = "invalid_amount"
    REASON_REQUIRED = "reason_required"
    INVALID_SOURCE = "invalid_source"
    EXPIRY_IN_PAST = "expiry_in_past"
    UNKNOWN_DEDUCTION = "unknown_deduction"
    NOT_REVERSIBLE = "not_reversible"
    ALREADY_REVERSED = "already_reversed"
    INVALID_PRICE = "invalid_price"
    PRICE_HISTORY_CONFLICT = "price_history_conflict"
    PRICE_EXISTS = "price_exists"
    INVALID_SCOPE = "invalid_scope"
    INVALID_MULTIPLIER = "invalid_multiplier"
    INVALID_PERIOD = "invalid_period"
    UNKNOWN_PRICING_CONFIG = "unknown_pricing_config"
    NOT_PENDING = "not_pending"
    SELF_APPROVAL = "self_approval"
