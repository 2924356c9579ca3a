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
    extra: dict = field(default_factory=dict)

    def mark_committed(self):
        self.committed_rows += 1


current_request_audit: ContextVar[RequestAudit | None] = ContextVar("current_request_audit", default=None)
