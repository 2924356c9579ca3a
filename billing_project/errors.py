"""Domain errors and the one handler that turns every API error into RFC 7807 problem+json."""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, DataError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from audit.context import note_unexpected_error
from billing_project.auth import AUTH_HEADER
from billing_project.codes import ErrorCode

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

# PostgreSQL's "try the transaction again" errors: nothing is wrong with the request or the service,
# it met a concurrent one. Marked on the response so TransactionRetryMiddleware can run it again.
RETRYABLE_SQLSTATES = {"40P01": "deadlock", "40001": "serialization_failure"}
RETRYABLE_CONFLICT = "retryable_conflict"


class DomainError(Exception):
    """A business rule said no. `code` is stable: clients and tests match on it."""

    status = status.HTTP_400_BAD_REQUEST
    code = ErrorCode.BAD_REQUEST
    title = "Bad request"

    def __init__(self, detail: str | None = None, *, code: str | None = None, extra: dict | None = None):
        self.detail = detail or self.title
        if code:
            self.code = code
        self.extra = extra or {}
        super().__init__(self.detail)


class Unauthenticated(DomainError):
    """401: the credentials are missing or wrong. The answer says how to authenticate."""

    status = status.HTTP_401_UNAUTHORIZED
    code = ErrorCode.NOT_AUTHENTICATED
    title = "Authentication required"
    www_authenticate = AUTH_HEADER


class NotFound(DomainError):
    status = status.HTTP_404_NOT_FOUND
    code = ErrorCode.NOT_FOUND
    title = "Not found"


class Conflict(DomainError):
    status = status.HTTP_409_CONFLICT
    code = ErrorCode.CONFLICT
    title = "Conflict"


class PaymentRequired(DomainError):
    status = status.HTTP_402_PAYMENT_REQUIRED
    code = ErrorCode.PAYMENT_REQUIRED
    title = "Payment required"


class RuleViolation(DomainError):
    status = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = ErrorCode.RULE_VIOLATION
    title = "Unprocessable request"


class Forbidden(DomainError):
    status = status.HTTP_403_FORBIDDEN
    code = ErrorCode.FORBIDDEN
    title = "Forbidden"


class TooManyRequests(DomainError):
    status = status.HTTP_429_TOO_MANY_REQUESTS
    code = ErrorCode.TOO_MANY_REQUESTS
    title = "Too many requests"


class ServiceUnavailable(DomainError):
    status = status.HTTP_503_SERVICE_UNAVAILABLE
    code = ErrorCode.SERVICE_UNAVAILABLE
    title = "Service unavailable"


def problem_body(*, status_code: int, code: str, title: str, detail: str, instance: str, **extra) -> dict:
    return {
        "type": f"urn:problem:{code}",
        "title": title,
        "status": status_code,
        "detail": detail,
        "instance": instance,
        "code": code,
        **extra,
    }


# The `title` of the problems DRF's own exceptions become, by status.
DRF_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    415: "Unsupported media type",
    429: "Too many requests",
}


def _drf_problem(exc: exceptions.APIException, instance: str) -> tuple[int, dict]:
    code = exc.default_code
    extra = {}
    if isinstance(exc, exceptions.ValidationError):
        code = ErrorCode.VALIDATION_ERROR
        detail = "The request has invalid fields."
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        extra["errors"] = errors
    elif isinstance(exc.detail, dict):
        # simplejwt's token errors: {"detail": ..., "code": ..., "messages": [...]}
        detail = str(exc.detail.get("detail", exc.default_detail))
        code = str(exc.detail.get("code", code))
    elif isinstance(exc.detail, list):
        detail = "; ".join(str(item) for item in exc.detail)
    else:
        detail = str(exc.detail)
        code = getattr(exc.detail, "code", None) or code
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        extra["retry_after"] = int(exc.wait) + 1
    title = DRF_TITLES.get(exc.status_code, "Error")
    return exc.status_code, problem_body(
        status_code=exc.status_code, code=str(code), title=title, detail=detail, instance=instance, **extra
    )


def problem_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every error leaves the API as application/problem+json."""
    request = context.get("request")
    instance = request.path if request is not None else ""
    headers = {}
    conflict = None
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )

    if isinstance(exc, DomainError):
        status_code = exc.status
        body = problem_body(
            status_code=exc.status, code=exc.code, title=exc.title, detail=exc.detail, instance=instance, **exc.extra
        )
        if "retry_after" in exc.extra:
            headers["Retry-After"] = str(exc.extra["retry_after"])
        if isinstance(exc, Unauthenticated):
            headers["WWW-Authenticate"] = exc.www_authenticate
    elif isinstance(exc, exceptions.APIException):
        status_code, body = _drf_problem(exc, instance)
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(body["retry_after"])
    elif isinstance(exc, DataError):
        # A value the database cannot take or compare (out of range, an impossible time zone offset):
        # the request's input, not the service, is at fault.
        logger.warning("database refused a value on %s: %s", instance, exc)
        status_code = 400
        body = problem_body(
            status_code=400,
            code=ErrorCode.INVALID_VALUE,
            title="Bad request",
            detail="A value in the request is out of the range the service accepts.",
            instance=instance,
        )
    elif isinstance(exc, DatabaseError) and (conflict := retryable_conflict_of(exc)):
        logger.warning("transaction conflict (%s) on %s: %s", conflict, instance, exc)
        status_code = 409
        body = problem_body(
            status_code=409,
            code=ErrorCode.TRANSACTION_CONFLICT,
            title="Conflict",
            detail="The request collided with concurrent ones (a deadlock or a serialization failure) "
            "and was not applied, even after retries; send it again.",
            instance=instance,
        )
        headers["Retry-After"] = "1"
    elif isinstance(exc, DatabaseError) and _is_connection_error(exc):
        logger.error("database unavailable: %s", exc)
        status_code = 503
        body = problem_body(
            status_code=503,
            code=ErrorCode.DATABASE_UNAVAILABLE,
            title="Service unavailable",
            detail="The database is unavailable; retry shortly.",
            instance=instance,
        )
        headers["Retry-After"] = "5"
    else:
        logger.exception("unhandled error on %s", instance, exc_info=exc)
        note_unexpected_error(exc)
        status_code = 500
        body = problem_body(
            status_code=500,
            code=ErrorCode.INTERNAL_ERROR,
            title="Internal server error",
            detail="An unexpected error occurred.",
            instance=instance,
        )
    set_rollback()
    response = Response(body, status=status_code, headers=headers, content_type=PROBLEM_CONTENT_TYPE)
    if conflict:
        setattr(response, RETRYABLE_CONFLICT, conflict)
    return response


def retryable_conflict_of(exc: DatabaseError) -> str | None:
    """ "deadlock" or "serialization_failure" when PostgreSQL asks for the transaction to be retried."""
    sqlstate = getattr(exc.__cause__, "sqlstate", None) or getattr(exc, "sqlstate", None)
    return RETRYABLE_SQLSTATES.get(sqlstate)


def _is_connection_error(exc: DatabaseError) -> bool:
    from django.db import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError)


def problem_response(request, *, status_code: int, code: str, title: str, detail: str, **extra) -> JsonResponse:
    """A problem+json response outside DRF (middleware, Django's 404/500 handlers)."""
    return JsonResponse(
        problem_body(status_code=status_code, code=code, title=title, detail=detail, instance=request.path, **extra),
        status=status_code,
        content_type=PROBLEM_CONTENT_TYPE,
    )
