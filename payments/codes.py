"""Stable problem codes of payments: clients and tests match on them."""

from enum import StrEnum


class ErrorCode(StrEnum):
    PAYMENT_OPERATION_NOT_FOUND = "payment_operation_not_found"
    INVALID_SIGNATURE = "invalid_signature"
    WEBHOOK_PROCESSING_FAILED = "webhook_processing_failed"
    WEBHOOK_EVENT_NOT_FOUND = "webhook_event_not_found"
    PAYMENT_IN_PROGRESS = "payment_in_progress"
    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_ACTION_REQUIRED = "payment_action_required"
    PROVIDER_UNAVAILABLE = "payment_provider_unavailable"
    PROVIDER_ERROR = "payment_provider_error"
