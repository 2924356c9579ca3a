"""Payments' own webhook handlers: the events that settle a payment operation (a checkout, a one-off
charge's invoice) and the events about the user's Stripe customer. Registered first for their event
types (payments.apps), so an event about an operation's checkout or invoice settles that operation;
any other invoice goes on to the handlers of the apps above."""

import uuid

from django.contrib.auth import get_user_model

from billing_project import sql
from billing_project.enums import EventType
from billing_project.money import minor_to_major, minor_to_text
from billing_project.outbound import notify
from payments import stripe_api
from payments.models import (
    CHECKOUT_KINDS,
    UNFINISHED_STATES,
    OperationKind,
    PaymentOperation,
    StripeCustomer,
    WebhookEvent,
)
from payments.registry import Unmatched
from payments.services.customers import customer_record
from payments.services.inbox import event_audit, event_object, event_record, fetched_object
from payments.services.operations import (
    FAILED,
    PAID,
    WAITING,
    Outcome,
    checkout_session_facts,
    invoice_facts,
    operation_invoice_correct,
    operation_open,
    operation_settle,
    stripe_active,
)
from payments.services.refunds import invoice_payment_ids

# What a checkout's metadata.kind names. Checkouts started before operations were recorded (or whose
# operation is gone) name only their kind: the operation is opened from the session then.
CHECKOUT_KINDS_BY_NAME = {
    "subscription": OperationKind.SUBSCRIPTION_CHECKOUT,
    "license": OperationKind.LICENSE_CHECKOUT,
    "license_upgrade": OperationKind.LICENSE_UPGRADE_CHECKOUT,
    "credit_pack": OperationKind.CREDIT_PACK_CHECKOUT,
}
PAID_STATUSES = ("paid", "no_payment_required")


def _by_id(operation_id) -> PaymentOperation | None:
    read = _by_id_read(operation_id)
    return None if read is None else sql.first_of(PaymentOperation, read)


def _by_id_read(operation_id) -> sql.Statement | None:
    """The read of the operation by its id; None when there is no id or it is not a UUID (not one of ours)."""
    if not operation_id:
        return None
    try:
        pk = uuid.UUID(str(operation_id))
    except ValueError:
        return None
    return sql.first_statement(PaymentOperation, "id = %s"), sql.values_of(PaymentOperation, id=pk)


def _id_of(value) -> str:
    if not value:
        return ""
    return value if isinstance(value, str) else value.get("id", "")


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# The user's Stripe customer


def _user_of_customer(row: WebhookEvent, customer_id: str, *, customer: dict | None = None):
    """The user a Stripe customer belongs to: the one recorded here, else the user its metadata
    names (`customer`, or the customer read from Stripe before processing: `customer_fetch`)."""
    if not customer_id:
        return None
    known = StripeCustomer.objects.select_related("user").filter(stripe_customer_id=customer_id).first()
    if known is not None:
        return known.user
    customer = customer or fetched_object(row, customer_id) or {}
    user_id = _int_or_none((customer.get("metadata") or {}).get("user_id"))
    return get_user_model().objects.filter(pk=user_id).first() if user_id else None


def customer_fetch(data_object: dict) -> dict:
    """Before processing: the customer of a checkout that names no user, read from Stripe (the
    customers made here carry the user in their metadata)."""
    if not stripe_active() or _int_or_none(data_object.get("client_reference_id")) is not None:
        return {}
    customer_id = _id_of(data_object.get("customer"))
    if not customer_id or StripeCustomer.objects.filter(stripe_customer_id=customer_id).exists():
        return {}
    customer = stripe_api.object_read("customer", customer_id)
    return {customer_id: customer} if customer else {}


def customer_updated(row: WebhookEvent) -> dict:
    """A customer's change at Stripe: a customer our user owns (its metadata names the user) is
    recorded as theirs when the user has none yet."""
    customer = event_object(row)
    user = _user_of_customer(row, customer["id"], customer=customer)
    if user is None:
        raise Unmatched(f"Customer {customer['id']} belongs to no user here.")
    customer_record(user=user, stripe_customer_id=customer["id"])
    event_record(row, event_type="customer_updated", user=user, customer_id=customer["id"])
    return {"action": "customer_updated", "customer_id": customer["id"], "user_id": user.pk}


def customer_deleted(row: WebhookEvent) -> dict:
    """A customer deleted at Stripe is forgotten here: the user's next payment makes a new one."""
    customer = event_object(row)
    known = StripeCustomer.objects.select_related("user").filter(stripe_customer_id=customer["id"]).first()
    if known is None:
        raise Unmatched(f"Customer {customer['id']} belongs to no user here.")
    user = known.user
    known.delete()
    event_record(row, event_type="customer_deleted", user=user, customer_id=customer["id"])
    return {"action": "customer_forgotten", "customer_id": customer["id"], "user_id": user.pk}


# Checkouts


def _checkout_user(row: WebhookEvent, session: dict):
    """Whom a checkout is for: its client_reference_id, else the owner of its customer."""
    user_id = _int_or_none(session.get("client_reference_id"))
    if user_id is not None:
        return get_user_model().objects.filter(pk=user_id).first()
    return _user_of_customer(row, _id_of(session.get("customer")))


def _checkout_operation(row: WebhookEvent, session: dict, *, open_missing: bool) -> PaymentOperation:
    """The operation of a checkout session. With `open_missing`, a checkout whose operation is not
    recorded here (started before operations were, or recorded elsewhere) opens one from what its
    metadata and its user name. Unmatched when it names nothing of ours."""
    metadata = session.get("metadata") or {}
    operation = _by_id(metadata.get("operation_id"))
    if operation is None:
        operation = PaymentOperation.objects.filter(stripe_checkout_session_id=session["id"]).first()
    if operation is not None:
        return operation
    kind = CHECKOUT_KINDS_BY_NAME.get(metadata.get("kind"))
    if kind is None:
        raise Unmatched(f"Checkout {session['id']} names no operation and no kind of purchase of ours.")
    if not open_missing:
        raise Unmatched(f"Checkout {session['id']} started no payment recorded here.")
    user = _checkout_user(row, session)
    if user is None:
        raise Unmatched(
            f"Checkout {session['id']} names no user here (client_reference_id "
            f"{session.get('client_reference_id')!r}, customer {_id_of(session.get('customer')) or 'none'})."
        )
    return operation_open(
        kind=kind,
        user=user,
        subject=user,
        amount_usd=minor_to_major(session.get("amount_total") or 0, session.get("currency") or "usd"),
        currency=session.get("currency") or "usd",
        params={"metadata": metadata, "plan_code": metadata.get("tier", metadata["kind"])},
        natural_key=f"checkout:{session['id']}",
        stripe_customer_id=_id_of(session.get("customer")),
    )


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


def _noted(row: WebhookEvent, **result) -> dict:
    """An event that changes nothing here, audited as handled."""
    event_audit(row, **result)
    return result


def checkout_session_completed(row: WebhookEvent) -> dict:
    """checkout.session.completed and checkout.session.async_payment_succeeded: paid -> the
    operation's effect; paid by a delayed method (bank debit) -> waiting for the async events."""
    session = event_object(row)
    operation = _checkout_operation(row, session, open_missing=True)
    status = PAID if session.get("payment_status") in PAID_STATUSES else WAITING
    result = _settled(row, operation, Outcome(status, checkout_session_facts(session)))
    if status == WAITING:  # a settled operation audits itself; one still waiting is audited here
        event_audit(row, **result)
    return result


def checkout_session_async_payment_failed(row: WebhookEvent) -> dict:
    session = event_object(row)
    operation = _checkout_operation(row, session, open_missing=True)
    return _settled(row, operation, Outcome(FAILED, reason="The delayed payment of the checkout failed."))


def checkout_session_expired(row: WebhookEvent) -> dict:
    """An abandoned checkout: its operation fails, which gives back what it held (a coupon), and
    once committed the one-off Stripe coupon it made is deleted (operation cleanup)."""
    session = event_object(row)
    operation = _checkout_operation(row, session, open_missing=False)
    return _settled(row, operation, Outcome(FAILED, reason="The checkout session expired unpaid."))


# Invoices of operations


def _invoice_subscription_id(invoice: dict) -> str:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return _id_of(details.get("subscription") or invoice.get("subscription"))


def _invoice_operation_id(row: WebhookEvent, invoice: dict):
    """The operation an invoice names: its own metadata (a one-off charge), else the metadata of its
    subscription (a checkout's), as the invoice carries it or as Stripe answered before processing."""
    if (invoice.get("metadata") or {}).get("operation_id"):
        return invoice["metadata"]["operation_id"]
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    if (details.get("metadata") or {}).get("operation_id"):
        return details["metadata"]["operation_id"]
    subscription = fetched_object(row, _invoice_subscription_id(invoice)) or {}
    return (subscription.get("metadata") or {}).get("operation_id")


def _invoice_operation(row: WebhookEvent, invoice: dict) -> PaymentOperation | None:
    """The operation that owns this invoice (a one-off charge it created), is retrying it now, or is
    the checkout whose subscription's first invoice this is (and still waits for it). A
    subscription invoice whose operation is over belongs to the subscription's own handlers."""
    operation = _by_id(_invoice_operation_id(row, invoice))
    if operation is None:
        operation = sql.first_of(PaymentOperation, _by_invoice_read(invoice["id"]))
    if operation is None:
        return None
    if operation.stripe_objects.get("owns_invoice") or operation.state in UNFINISHED_STATES:
        return operation
    return None


def _by_invoice_read(invoice_id: str) -> sql.Statement:
    return sql.first_statement(PaymentOperation, "stripe_invoice_id = %s", "created_at DESC"), [invoice_id]


def invoice_operation_reads(row: WebhookEvent) -> list[sql.Statement]:
    """What `_invoice_operation` reads (the event reads of the invoice events)."""
    invoice = event_object(row)
    if not invoice.get("id"):
        return []
    by_id = _by_id_read(_invoice_operation_id(row, invoice))
    return [*([by_id] if by_id else []), _by_invoice_read(invoice["id"])]


def _facts_of_invoice(invoice: dict, operation: PaymentOperation) -> dict:
    facts = invoice_facts(invoice)
    if operation.kind in CHECKOUT_KINDS:  # the checkout's subscription and session, as its own event would say
        facts |= {
            "subscription_id": _invoice_subscription_id(invoice),
            "session_id": operation.stripe_checkout_session_id,
        }
    return facts


def invoice_paid(row: WebhookEvent) -> dict | None:
    """Settles the operation; an operation settled already (by its own run, or an earlier event) has
    what it recorded of the invoice corrected to Stripe's amounts, as any invoice of ours is."""
    invoice = event_object(row)
    operation = _invoice_operation(row, invoice)
    if operation is None:
        return None
    result = _settled(row, operation, Outcome(PAID, _facts_of_invoice(invoice, operation)))
    corrected = operation_invoice_correct(operation_id=operation.pk, invoice=invoice, reason=f"Stripe: {row.event_id}")
    return {**result, "amounts_corrected": corrected}


def invoice_payment_failed(row: WebhookEvent) -> dict | None:
    invoice = event_object(row)
    operation = _invoice_operation(row, invoice)
    if operation is None:
        return None
    if operation.kind in CHECKOUT_KINDS:
        # A checkout's first invoice may be retried by the customer on the page: its session decides.
        return _noted(row, action="checkout_payment_failed_noted", operation_id=str(operation.pk))
    attempt = invoice.get("attempt_count")
    reason = f"Stripe could not collect the invoice (attempt {attempt})." if attempt else "The payment failed."
    return _settled(row, operation, Outcome(FAILED, invoice_facts(invoice), reason))


def invoice_state_noted(row: WebhookEvent) -> dict | None:
    """invoice.finalized / voided / marked_uncollectible of an invoice an operation created: a
    voided or uncollectible one fails the operation still waiting for it; a finalized one is noted."""
    invoice = event_object(row)
    operation = _invoice_operation(row, invoice)
    if operation is None or operation.kind in CHECKOUT_KINDS:
        return None
    if row.event_type == "invoice.finalized":
        return _noted(row, action="invoice_finalized_noted", operation_id=str(operation.pk))
    return _settled(row, operation, Outcome(FAILED, invoice_facts(invoice), f"The invoice is {invoice['status']}."))


def invoice_payment_action_required(row: WebhookEvent) -> dict:
    """The customer's bank asks them to confirm a payment (3-D Secure): they are told (the
    payment.action_required notification, once per payment intent) of the hosted invoice page where
    they confirm it. The payment itself waits for the invoice's paid or failed event."""
    invoice = event_object(row)
    operation = _invoice_operation(row, invoice)
    if operation is not None and operation.kind in CHECKOUT_KINDS:
        # The customer is on Stripe's checkout page, which asks for the confirmation itself.
        return _noted(row, action="confirmed_on_the_checkout_page", operation_id=str(operation.pk))
    user = operation.user if operation is not None else _user_of_customer(row, _id_of(invoice.get("customer")))
    if user is None:
        raise Unmatched(f"Invoice {invoice['id']} belongs to no user here.")
    link = invoice.get("hosted_invoice_url") or ""
    event_record(
        row,
        event_type="invoice_payment_action_required",
        user=user,
        customer_id=_id_of(invoice.get("customer")),
        invoice_id=invoice["id"],
        subscription_id=_invoice_subscription_id(invoice),
        currency=invoice.get("currency") or "",
    )
    told = False
    if link:
        currency = invoice.get("currency") or "usd"
        payment_intent_id = invoice_payment_ids(invoice)["stripe_payment_intent_id"]
        # Once per payment intent: Stripe asking again about the same confirmation tells nothing more.
        # An invoice of the pinned API version names none: its attempt stands for the payment intent.
        occurrence = payment_intent_id or f"{invoice['id']}:{invoice.get('attempt_count') or 0}"
        told = (
            notify(
                user=user,
                kind=EventType.PAYMENT_ACTION_REQUIRED,
                occurrence=occurrence,
                context={
                    "stripe_invoice_id": invoice["id"],
                    "payment_intent_id": payment_intent_id,
                    "amount": minor_to_text(invoice.get("amount_due") or 0, currency),
                    "currency": currency,
                    "description": invoice.get("description")
                    or (operation.description if operation else "")
                    or "invoice",
                    "hosted_invoice_url": link,
                },
            )
            is not None
        )
    return {"action": "customer_asked_to_confirm", "user_id": user.pk, "emailed": told}


HANDLERS = {
    "checkout.session.completed": checkout_session_completed,
    "checkout.session.async_payment_succeeded": checkout_session_completed,
    "checkout.session.async_payment_failed": checkout_session_async_payment_failed,
    "checkout.session.expired": checkout_session_expired,
    "invoice.paid": invoice_paid,
    "invoice.payment_succeeded": invoice_paid,
    "invoice.payment_failed": invoice_payment_failed,
    "invoice.payment_action_required": invoice_payment_action_required,
    "invoice.finalized": invoice_state_noted,
    "invoice.voided": invoice_state_noted,
    "invoice.marked_uncollectible": invoice_state_noted,
    "customer.updated": customer_updated,
    "customer.deleted": customer_deleted,
}
READS = {
    event_type: invoice_operation_reads
    for event_type, handler in HANDLERS.items()
    if handler in (invoice_paid, invoice_payment_failed, invoice_state_noted, invoice_payment_action_required)
}
FETCHERS = {
    "checkout.session.completed": customer_fetch,
    "checkout.session.async_payment_succeeded": customer_fetch,
    "checkout.session.async_payment_failed": customer_fetch,
}
