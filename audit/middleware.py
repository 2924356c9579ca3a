import json
import logging

from audit.context import RequestAudit, current_request_audit, note_unexpected_error
from audit.models import AuditAction

logger = logging.getLogger(__name__)

ADMIN_API_PREFIX = "/api/v1/admin/"
CONSOLE_PREFIX = "/admin/"
CONSOLE_SESSION_PATHS = ("/admin/login/", "/admin/logout/", "/admin/password_change/")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_failed_admin_write(request, status_code: int) -> bool:
    if request.method not in WRITE_METHODS:
        return False
    if request.path.startswith(ADMIN_API_PREFIX):
        return status_code >= 400 and status_code != 401
    if request.path.startswith(CONSOLE_PREFIX) and not request.path.startswith(CONSOLE_SESSION_PATHS):
        return status_code >= 500
    return False


def _action_for(request) -> str:
    if request.method == "DELETE" or request.path.rstrip("/").endswith("/delete"):
        return AuditAction.DELETE
    if request.method in ("PUT", "PATCH") or request.path.rstrip("/").endswith("/change"):
        return AuditAction.UPDATE
    return AuditAction.CREATE


def _resource_type_for(request) -> str:
    if request.path.startswith(ADMIN_API_PREFIX):
        parts = request.path[len(ADMIN_API_PREFIX) :].strip("/").split("/")
        return parts[0] or "admin"
    parts = request.path[len(CONSOLE_PREFIX) :].strip("/").split("/")
    return ".".join(parts[:2])


def _error_of(response, state: RequestAudit) -> str:
    if state.error_message:
        return state.error_message
    if "json" in response.get("Content-Type", ""):
        try:
            body = json.loads(response.content)
        except ValueError:
            return ""
        return str(body.get("detail", ""))[:2000]
    return ""


class AuditContextMiddleware:
    """Makes the request available to `audit_record`, gives the rows it wrote the status the client
    gets, and records admin writes that failed.

    The status is known only once the response is built, after the service's transaction committed,
    so the rows are written without one and take it here (before the sealer seals them). A view that
    knows its answer beforehand has them written with it (`audit_status_expected`); they are
    corrected here should the response differ. A failed
    write rolls back with its own audit row, so the failure is written here, afterwards, in a
    transaction of its own.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        state = RequestAudit(request=request)
        token = current_request_audit.set(state)
        try:
            response = self.get_response(request)
        finally:
            current_request_audit.reset(token)
        if state.awaiting_status:
            self._record_status(request, response, state)
        if state.written_expecting:
            self._settle_expected_status(request, response, state)
        if _is_failed_admin_write(request, response.status_code) and not state.committed_rows:
            self._record_failure(request, response, state)
        return response

    def process_exception(self, request, exception):
        note_unexpected_error(exception)

    def _record_status(self, request, response, state: RequestAudit) -> None:
        from audit.services import audit_rows_answered

        try:
            audit_rows_answered(row_ids=state.awaiting_status, status_code=response.status_code)
        except Exception:
            # The rows stand; the sealer seals them without a status once AUDIT_STATUS_WAIT_SECONDS pass.
            logger.exception("could not record the status of %s on its audit rows", request.path)

    def _settle_expected_status(self, request, response, state: RequestAudit) -> None:
        from audit.services import audit_rows_answered_as_expected

        try:
            audit_rows_answered_as_expected(
                row_ids=state.written_expecting, expected=state.status_expected, status_code=response.status_code
            )
        except Exception:
            logger.exception("could not correct the status of %s on its audit rows", request.path)

    def _record_failure(self, request, response, state: RequestAudit) -> None:
        from audit.services import audit_record

        try:
            audit_record(
                action=_action_for(request),
                resource_type=_resource_type_for(request),
                status_code=response.status_code,
                error_message=_error_of(response, state) or f"HTTP {response.status_code}",
                request=request,
            )
        except Exception:
            logger.exception("could not record a failed admin write to %s", request.path)
