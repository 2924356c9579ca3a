"""`Idempotency-Key` for every POST of the API (SPEC 5).

Most endpoints: the key row is inserted at the start of the request inside the same transaction as
the request's effects: a concurrent duplicate blocks on the unique index until the first commits,
then replays its stored response, so the work is done once. An answer that tells the client to come
back (a 5xx, a 429, anything with `Retry-After`) rolls everything back, key included, so the client
may retry.

Endpoints that call the payment provider (views with `calls_payment_provider = True`) must not run
inside a transaction: the key row is committed first, marked in progress, the view runs with no
transaction open (its services commit their own, around the provider calls), and the response is
stored after. A concurrent duplicate meanwhile gets 409 `idempotency_key_in_use`; an answer that tells
the client to come back frees the key, and the retry resumes the payment operation the first attempt
recorded (never a second charge). A key left in progress by a killed worker is freed after
IDEMPOTENCY_IN_PROGRESS_TIMEOUT.

Keys are scoped to the verified caller and the path, and kept 24 hours.
"""

import hashlib

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.http import HttpResponse
from django.urls import Resolver404, resolve
from django.utils import timezone

from billing_project.auth import caller_identity
from billing_project.codes import ErrorCode
from billing_project.errors import problem_response
from billing_project.metrics import IDEMPOTENT_HITS
from billing_project.models import IdempotencyKey

HEADER = "Idempotency-Key"
HEADER_META = "HTTP_IDEMPOTENCY_KEY"
MAX_KEY_LENGTH = 255
PENDING_STATUS = 0


class IdempotencyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method != "POST" or not request.path.startswith("/api/"):
            return self.get_response(request)
        key = request.META.get(HEADER_META)
        if key is None:
            return self.get_response(request)
        if not key or len(key) > MAX_KEY_LENGTH:
            return problem_response(
                request,
                status_code=400,
                code=ErrorCode.IDEMPOTENCY_KEY_INVALID,
                title="Bad request",
                detail=f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters.",
            )
        caller = caller_identity(request)
        if caller is None:
            # Unauthenticated: DRF answers 401 (or the endpoint is public and idempotent by itself).
            return self.get_response(request)
        request_hash = hashlib.sha256(request.body).hexdigest()
        run = self._run_outside_transaction if _calls_payment_provider(request) else self._run_once
        try:
            return run(request, caller=caller, key=key, request_hash=request_hash)
        except DatabaseError:
            unavailable = problem_response(
                request,
                status_code=503,
                code=ErrorCode.DATABASE_UNAVAILABLE,
                title="Service unavailable",
                detail="The database is unavailable; retry shortly.",
            )
            unavailable["Retry-After"] = "5"  # as the API's own 503 says
            return unavailable

    def _run_once(self, request, *, caller: str, key: str, request_hash: str):
        with transaction.atomic():
            IdempotencyKey.objects.filter(
                caller=caller, path=request.path, key=key, created_at__lt=timezone.now() - settings.IDEMPOTENCY_KEY_TTL
            ).delete()
            try:
                with transaction.atomic():
                    record = IdempotencyKey.objects.create(
                        caller=caller,
                        path=request.path,
                        key=key,
                        request_hash=request_hash,
                        status_code=PENDING_STATUS,
                        content_type="",
                    )
            except IntegrityError:
                # A committed request holds this key: answer with what it stored.
                stored = IdempotencyKey.objects.get(caller=caller, path=request.path, key=key)
                return self._replay(request, stored, request_hash)

            response = self.get_response(request)
            if not _final(response):
                transaction.set_rollback(True)
                return response
            _keep(record, response)
            return response

    def _run_outside_transaction(self, request, *, caller: str, key: str, request_hash: str):
        scope = {"caller": caller, "path": request.path, "key": key}
        with transaction.atomic():
            IdempotencyKey.objects.filter(
                **scope, created_at__lt=timezone.now() - settings.IDEMPOTENCY_KEY_TTL
            ).delete()
            IdempotencyKey.objects.filter(
                **scope,
                status_code=PENDING_STATUS,
                created_at__lt=timezone.now() - settings.IDEMPOTENCY_IN_PROGRESS_TIMEOUT,
            ).delete()
            record, created = IdempotencyKey.objects.get_or_create(
                **scope, defaults={"request_hash": request_hash, "status_code": PENDING_STATUS, "content_type": ""}
            )
        if not created:
            if record.status_code == PENDING_STATUS and record.request_hash == request_hash:
                in_use = problem_response(
                    request,
                    status_code=409,
                    code=ErrorCode.IDEMPOTENCY_KEY_IN_USE,
                    title="Conflict",
                    detail=f"A request with this {HEADER} is still being processed; retry shortly.",
                )
                in_use["Retry-After"] = "1"
                return in_use
            return self._replay(request, record, request_hash)
        try:
            response = self.get_response(request)
        except BaseException:
            record.delete()
            raise
        if not _final(response):
            record.delete()
            return response
        _keep(record, response)
        return response

    def _replay(self, request, stored: IdempotencyKey, request_hash: str):
        if stored.request_hash != request_hash:
            return problem_response(
                request,
                status_code=422,
                code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
                title="Unprocessable request",
                detail=f"This {HEADER} was already used with a different request body.",
            )
        IDEMPOTENT_HITS.labels(operation="api").inc()
        response = HttpResponse(stored.response_body, status=stored.status_code, content_type=stored.content_type)
        response["Idempotent-Replayed"] = "true"
        return response


def _keep(record: IdempotencyKey, response) -> None:
    """Stores the final answer on its key; every later request with the key gets it replayed."""
    record.status_code = response.status_code
    record.response_body = response.content.decode()
    record.content_type = response.get("Content-Type", "application/json")
    record.save(update_fields=["status_code", "response_body", "content_type"])


def _final(response) -> bool:
    """Whether a response is the answer to keep for its key. One that tells the client to come back
    (a 5xx, a 429, anything with Retry-After such as a payment in progress, a transaction conflict
    that TransactionRetryMiddleware retries) is not: the key is freed for the retry."""
    return not (
        response.status_code >= 500
        or response.status_code == 429
        or response.streaming
        or response.has_header("Retry-After")
    )


def _calls_payment_provider(request) -> bool:
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return False
    view_class = getattr(match.func, "cls", None)
    return bool(getattr(view_class, "calls_payment_provider", False))
