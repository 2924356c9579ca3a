"""Request-level guards of the API (bodies too large to read, transactions that met a concurrent one),
and the console's browser-session middlewares confined to the console."""

import logging

from axes.middleware import AxesMiddleware
from corsheaders.middleware import CorsMiddleware
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.auth.models import AnonymousUser
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.db import connection
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.cache import patch_vary_headers
from django_otp.middleware import OTPMiddleware

from billing_project.codes import ErrorCode
from billing_project.errors import RETRYABLE_CONFLICT, problem_response
from billing_project.metrics import DB_TRANSACTION_CONFLICTS
from billing_project.transactions import conflict_pause

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
CONSOLE_PREFIX = "/admin/"


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


class RequestBodyLimitMiddleware:
    """A body longer than DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 problem, decided on its declared
    length before anything (the idempotency key's hash, DRF's parser) reads it. Django would raise
    RequestDataTooBig at the first read instead, wherever that happens."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if request.path.startswith(API_PREFIX) and limit is not None and _content_length(request) > limit:
            return problem_response(
                request,
                status_code=413,
                code=ErrorCode.REQUEST_TOO_LARGE,
                title="Content too large",
                detail=f"The request body may be at most {limit} bytes.",
                max_bytes=limit,
            )
        return self.get_response(request)


class ApiCorsMiddleware(CorsMiddleware):
    """django-cors-headers' middleware, which for a request without an Origin header (every caller
    but a browser) only marks the answer as varying by origin. It reads the header through
    `request.headers`, which copies every header first: a tenth of its cost on `GET me/credits/`."""

    def add_response_headers(self, request, response):
        if "HTTP_ORIGIN" in request.META:
            return super().add_response_headers(request, response)
        enabled = getattr(request, "_cors_enabled", None)
        if enabled if enabled is not None else self.is_enabled(request):
            patch_vary_headers(response, ("origin",))
        return response


class TransactionRetryMiddleware:
    """Runs an API request again when it met a deadlock or a serialization failure (PostgreSQL
    40P01/40001), up to DB_CONFLICT_RETRIES times with a random, growing pause; then the client
    gets the 409 `transaction_conflict` problem. Each attempt is counted in
    `db_transaction_conflicts_total{kind, outcome, operation="request"}`. Services retry their own
    transactions first (billing_project.transactions); this covers a request's outermost one.

    A conflict rolls back the failed transaction, so running the request again is what the client
    would do with the 409, done sooner. It only happens with no transaction open around the
    request: inside one, the locks it already holds would meet the same conflict again.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        request.body  # noqa: B018  (read once and kept: every attempt parses the same bytes)
        attempt = 0
        while True:
            response = self.get_response(request)
            kind = getattr(response, RETRYABLE_CONFLICT, None)
            if kind is None:
                return response
            if attempt >= settings.DB_CONFLICT_RETRIES or connection.in_atomic_block:
                DB_TRANSACTION_CONFLICTS.labels(kind=kind, outcome="gave_up", operation="request").inc()
                logger.warning("%s on %s %s: gave up after %s retries", kind, request.method, request.path, attempt)
                return response
            attempt += 1
            DB_TRANSACTION_CONFLICTS.labels(kind=kind, outcome="retried", operation="request").inc()
            conflict_pause(attempt)


class ConsoleOnly:
    """For a middleware that serves the staff console's browser sessions (the session, the signed-in
    user, the second factor, flash messages, CSRF, the sign-in lockout page): every other path (the
    API, whose callers present tokens, health, metrics, the schema) passes straight through it. None
    of those reads a session, and together these middlewares cost a fifth of a small request's time
    in the worker."""

    def __call__(self, request):
        if request.path_info.startswith(CONSOLE_PREFIX):
            return super().__call__(request)
        return self.pass_through(request)

    def pass_through(self, request):
        return self.get_response(request)


class ConsoleSessionMiddleware(ConsoleOnly, SessionMiddleware):
    """The session cookie, read and written under `/admin/` only."""


class ConsoleAuthenticationMiddleware(ConsoleOnly, AuthenticationMiddleware):
    def pass_through(self, request):
        # Nobody until DRF authenticates the caller's token (it sets the request's user then).
        request.user = AnonymousUser()
        return self.get_response(request)


class ConsoleOTPMiddleware(ConsoleOnly, OTPMiddleware):
    """The console user's verified second factor, under `/admin/` only."""


class ConsoleMessageMiddleware(ConsoleOnly, MessageMiddleware):
    """The console's flash messages, under `/admin/` only."""


class ConsoleCsrfViewMiddleware(ConsoleOnly, CsrfViewMiddleware):
    """CSRF protection where a browser session can be: under `/admin/`. Nothing elsewhere is
    authenticated by a cookie (and DRF's views are exempt in any case)."""

    def process_view(self, request, callback, callback_args, callback_kwargs):
        if request.path_info.startswith(CONSOLE_PREFIX):
            return super().process_view(request, callback, callback_args, callback_kwargs)
        return None


class ConsoleAxesMiddleware(ConsoleOnly, AxesMiddleware):
    """The console's sign-in lockout page, under `/admin/` only: the API answers its own 429 problem."""
