"""Payments' own webhook handlers: the events that settle a payment operation. Registered first for
their event types (payments.apps), so an event about an operation's checkout or invoice settles that
operation; any other invoice goes on to the handlers of the apps above."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from billing_project.money import cents_to_usd
from payments.models import UNFINISHED_STATES, OperationKind, PaymentOperation, WebhookEvent
from payments.services.inbox import event_object
from payments.services.operations import (
    FAILED,
    PAID,
    WAITING,
    Outcome,
    checkout_session_facts,
    invoice_facts,
    operation_open,
    operation_settle,
)

# Checkouts started before operations were recorded name only their kind.
LEGACY_CHECKOUT_KINDS = {
    "subscription": OperationKind.SUBSCRIPTION_CHECKOUT,
    "license": OperationKind.LICENSE_CHECKOUT,
    "license_upgrade": OperationKind.LICENSE_UPGRADE_CHECKOUT,
}


def _by_id(operation_id) -> PaymentOperation | None:
    if not operation_id:
        return None
    try:
        return PaymentOperation.objects.filter(pk=operation_id).first()
    except ValidationError:  # not a UUID: not one of ours
        return None


def _checkout_operation(session: dict) -> PaymentOperation | None:
    metadata = session.get("metadata") or {}
    operation = _by_id(metadata.get("operation_id"))
    if operation is None:
        operation = PaymentOperation.objects.filter(stripe_checkout_session_id=session["id"]).first()
    if operation is None and metadata.get("kind") in LEGACY_CHECKOUT_KINDS:
        user = get_user_model().objects.filter(pk=_int_or_none(session.get("client_reference_id"))).first()
        if user is not None:
            operation = operation_open(
                kind=LEGACY_CHECKOUT_KINDS[metadata["kind"]],
                user=user,
                subject=user,
                amount_usd=cents_to_usd(session.get("amount_total") or 0),
                params={"metadata": metadata, "plan_code": metadata.get("tier", metadata["kind"])},
                natural_key=f"checkout:{session['id']}",
            )
    return operation


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _settled(row: WebhookEvent, operation: PaymentOperation, outcome: Outcome) -> dict:
    settled = operation_settle(
        operation_id=operation.pk,
        outcome=Outcome(outcome.status, {**outcome.facts, "webhook_event": row}, outcome.reason),
    )
    return {
        "action": "operation_settled",
        "operation_id": str(settled.pk),
        "kind": settled.kind,
        "state": settled.state,
        "object_id": (settled.result or {}).get("object_id"),
    }


def checkout_session_completed(row: WebhookEvent) -> dict | None:
    session = event_object(row)
    operation = _checkout_operation(session)
    if operation is None:
        return None
    if session.get("payment_status") in ("paid", "no_payment_required"):
        return _settled(row, operation, Outcome(PAID, checkout_session_facts(session)))
    # Paid by a delayed method: checkout.session.async_payment_succeeded or _failed decides.
    return _settled(row, operation, Outcome(WAITING, checkout_session_facts(session)))


def checkout_session_async_payment_failed(row: WebhookEvent) -> dict | None:
    session = event_object(row)
    operation = _checkout_operation(session)
    if operation is None:
        return None
    return _settled(row, operation, Outcome(FAILED, reason="The delayed payment of the checkout failed."))


def _invoice_operation(invoice: dict) -> PaymentOperation | None:
    """The operation that owns this invoice (a one-off charge it created), or is retrying it now. A
    subscription invoice whose retry operation is over belongs to the subscription's own handlers."""
    operation = _by_id((invoice.get("metadata") or {}).get("operation_id"))
    if operation is None:
        operation = PaymentOperation.objects.filter(stripe_invoice_id=invoice["id"]).order_by("-created_at").first()
    if operation is None:
        return None
    if operation.stripe_objects.get("owns_invoice") or operation.state in UNFINISHED_STATES:
        return operation
    return None


def invoice_paid(row: WebhookEvent) -> dict | None:
    invoice = event_object(row)
    operation = _invoice_operation(invoice)
    if operation is None:
        return None
    return _settled(row, operation, Outcome(PAID, invoice_facts(invoice)))


def invoice_payment_failed(row: WebhookEvent) -> dict | None:
    invoice = event_object(row)
    operation = _invoice_operation(invoice)
    if operation is None:
        return None
    attempt = invoice.get("attempt_count")
    reason = f"Stripe could not collect the invoice (attempt {attempt})." if attempt else "The payment failed."
    return _settled(row, operation, Outcome(FAILED, invoice_facts(invoice), reason))


HANDLERS = {
    "checkout.session.completed": checkout_session_completed,
    "checkout.session.async_payment_succeeded": checkout_session_completed,
    "checkout.session.async_payment_failed": checkout_session_async_payment_failed,
    "invoice.paid": invoice_paid,
    "invoice.payment_succeeded": invoice_paid,
    "invoice.payment_failed": invoice_payment_failed,
}
