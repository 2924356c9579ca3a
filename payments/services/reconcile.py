"""Settling operations nobody is driving any more, from what Stripe says of their objects
(`manage.py reconcile_payments`, the beat job, the console and staff API)."""

from collections import Counter

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of
from billing_project.errors import NotFound
from billing_project.jobs import items_run
from payments.codes import ErrorCode
from payments.models import PaymentOperation
from payments.services.operations import operation_settle_from_provider, operations_to_reconcile


def operation_reconcile(*, operation_id, actor=None) -> PaymentOperation:
    """Settles one operation now (staff); the request and its result are audited."""
    before = PaymentOperation.objects.filter(pk=operation_id).first()
    if before is None:
        raise NotFound("No such payment operation.", code=ErrorCode.PAYMENT_OPERATION_NOT_FOUND)
    operation = operation_settle_from_provider(operation_id=operation_id)
    audit_record(
        action=AuditAction.PROCESS,
        resource_type=resource_type_of(operation),
        resource_id=str(operation.pk),
        previous_value={"state": before.state, "cleanup_due": before.cleanup_due},
        new_value={"state": operation.state, "cleanup_due": operation.cleanup_due, "reconciled": True},
        actor=actor,
    )
    return operation


def payments_reconcile(*, now=None, progress=lambda items: items) -> Counter:
    """Settles every operation left unfinished or owing a cleanup, each on its own: one that cannot
    be settled now keeps its error on its row and the others go on. Counts the states reached."""

    def settle(operation_id) -> str:
        return operation_settle_from_provider(operation_id=operation_id).state

    return items_run(job="reconcile_payments", items=progress(operations_to_reconcile(now=now)), work=settle)
