"""The request being served, for audit rows written deep inside services.

Set by AuditContextMiddleware; empty in tasks and commands, where the caller passes an actor.
"""

from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class RequestAudit:
    request: object
    committed_rows: int = 0
    error_message: str = ""
    # Audit rows written without a status: they take the status of the response (AuditContextMiddleware).
    awaiting_status: list = field(default_factory=list)
    # The answer the view gives once its service has committed, when it knows it beforehand
    # (`audit_status_expected`): rows are written with it, and corrected only should the response differ.
    status_expected: int | None = None
    written_expecting: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    # The request's body as its audit rows keep it (redacted), once read: a request may write several.
    recorded_body: tuple | None = None

    def mark_committed(self):
        self.committed_rows += 1


current_request_audit: ContextVar[RequestAudit | None] = ContextVar("current_request_audit", default=None)


def request_body_recorded_as(reference: dict) -> None:
    """What the audit rows of the request being served keep instead of its body, for a body the
    service stores in full itself (a Stripe event, in the webhook inbox): a reference to the stored
    copy and its digest. The rows then hold no copy of the body, nor of personal data it carries."""
    state = current_request_audit.get()
    if state is not None:
        state.recorded_body = (reference,)


def audit_status_expected(status_code: int) -> None:
    """The status the request being served answers with once its service has committed (a Stripe
    delivery: 200 whatever the event's outcome; a failing handler rolls its rows back). Its audit
    rows are written with it, which spares the request the transaction that fills the status in
    afterwards."""
    state = current_request_audit.get()
    if state is not None:
        state.status_expected = status_code


def note_unexpected_error(exc: BaseException) -> None:
    """Keeps the cause of a 500 for the failure row of an admin write (staff-only, never the client)."""
    state = current_request_audit.get()
    if state is not None:
        state.error_message = f"{type(exc).__name__}: {exc}"[:2000]
