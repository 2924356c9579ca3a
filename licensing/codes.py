"""Stable codes of licensing: problem `code`s of refused requests and `reason`s of a failed validation.
Clients and tests match on them."""

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_CHECKSUM = "bad_checksum"
    LICENSE_NOT_FOUND = "license_not_found"
    LICENSE_NOT_ACTIVE = "license_not_active"
    ACTIVATION_NOT_FOUND = "activation_not_found"
    ACTIVATION_LIMIT_REACHED = "activation_limit_reached"
    DEVICE_CHANGE_LIMIT = "device_change_limit"
    VERSION_NOT_ON_SALE = "version_not_on_sale"
    UPGRADE_NOT_AVAILABLE = "upgrade_not_available"
    TRANSITION_NOT_ALLOWED = "license_transition_not_allowed"
    REASON_REQUIRED = "reason_required"
    CHECKOUT_TARGET_NOT_FOUND = "checkout_target_not_found"
    USER_NOT_FOUND = "user_not_found"


class InvalidReason(StrEnum):
    """Why `licenses/validate/` said no. A license that is not active answers with its status."""

    BAD_CHECKSUM = "bad_checksum"
    UNKNOWN_KEY = "unknown_key"
    PENDING = "pending"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_ACTIVATED_ON_DEVICE = "not_activated_on_device"
    VERSION_NOT_COVERED = "version_not_covered"
