"""Payment operations: record the intent, call the provider with an idempotency key, apply the effect.

Every movement of money (checkout start, upgrade charge, renewal charge, dunning retry, license
purchase, refund) and every change Stripe must mirror follows one recipe:

1. `operation_open`, in the caller's transaction, commits a `PaymentOperation` row (kind, subject,
   amount, params) before anything is asked of the provider.
2. `operation_run`, with no transaction open, runs the provider steps of its kind. Each request carries
   the idempotency key `<operation id>:<step>`, so a retry of the whole operation (the client's,
   Celery's, an operator's) reaches the same Stripe objects instead of new ones, and each object id is
   recorded on the row as soon as it is known.
3. `operation_settle` applies the effect in one transaction, once, when the money is known to have moved
   (`succeeded`) or known not to (`failed`, releasing what the operation held). A payment the provider
   has not decided yet (an asynchronous method, a card waiting for the customer) leaves the operation
   `submitted`: the webhook settles it through the same function.

A failure after money moved never leaves it without its effect: the next run, the webhook or
`reconcile_payments` (`operation_settle_from_provider`) completes it, and money that arrives for an
effect that no longer applies is refunded. A charge never happens twice: pay is only ever called on the
one invoice recorded on the operation.
"""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import stripe
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of, to_json
from billing_project.errors import Conflict
from billing_project.metrics import PAYMENT_OPERATIONS
from billing_project.money import major_to_minor
from billing_project.transactions import conflict_retrying
from payments import stripe_api
from payments.codes import ErrorCode
from payments.models import (
    CHARGE_KINDS,
    CHECKOUT_KINDS,
    UNFINISHED_STATES,
    OperationCleanup,
    OperationEffect,
    OperationKind,
    OperationState,
    PaymentOperation,
    WebhookProvider,
)
from payments.registry import EffectNotApplicable, effect_of
from payments.services.customers import customer_ensure, customer_record
from payments.services.events import payment_event_record
from payments.services.refunds import payment_record

logger = logging.getLogger(__name__)

PAID, WAITING, FAILED = "paid", "waiting", "failed"
# Stripe keeps an idempotency key 24 hours; an older operation is settled by asking Stripe what its
# objects became, never by repeating its creation steps.
IDEMPOTENCY_WINDOW = timedelta(hours=23)
# What the checkout session of each kind tells the webhook (SPEC 5: metadata.kind).
CHECKOUT_METADATA_KIND = {
    OperationKind.SUBSCRIPTION_CHECKOUT: "subscription",
    OperationKind.LICENSE_CHECKOUT: "license",
    OperationKind.LICENSE_UPGRADE_CHECKOUT: "license_upgrade",
    OperationKind.CREDIT_PACK_CHECKOUT: "credit_pack",
}
PAYMENT_EVENT_TYPES = {
    **dict.fromkeys(CHECKOUT_KINDS, "checkout_completed"),
    OperationKind.UPGRADE_CHARGE: "charge_succeeded",
    OperationKind.RENEWAL_CHARGE: "charge_succeeded",
    OperationKind.DUNNING_RETRY: "invoice_paid",
    OperationKind.CREDIT_RECHARGE: "charge_succeeded",
    OperationKind.REFUND: "refund_issued",
}


class OperationInProgress(Conflict):
    code = ErrorCode.PAYMENT_IN_PROGRESS
    title = "Payment in progress"


@dataclass(frozen=True)
class Outcome:
    """What the provider said: the money moved (`paid`), not yet (`waiting`) or not (`failed`)."""

    status: str
    facts: dict = field(default_factory=dict)
    reason: str = ""


def active_provider() -> str:
    """`PAYMENTS_PROVIDER` when set; otherwise Stripe when its key is configured, else the offline
    provider (development only: production refuses to start without one or the other named)."""
    if settings.PAYMENTS_PROVIDER:
        return settings.PAYMENTS_PROVIDER
    return WebhookProvider.STRIPE if settings.STRIPE_SECRET_KEY else WebhookProvider.OFFLINE


def stripe_active() -> bool:
    return active_provider() == WebhookProvider.STRIPE


# Opening


def operation_open(
    *,
    kind: str,
    user,
    subject,
    amount_usd,
    currency: str = "usd",
    description: str = "",
    params: dict | None = None,
    natural_key: str | None = None,
    stripe_customer_id: str = "",
) -> PaymentOperation:
    """Records an operation in the caller's transaction (nothing is asked of the provider here).
    `amount_usd` is in the major unit of `currency` (USD unless said otherwise); the row keeps minor
    units. `natural_key` makes opening the same operation twice return the first row."""
    operation, _ = PaymentOperation.objects.get_or_create(
        natural_key=natural_key or f"{kind}:{uuid.uuid4()}",
        defaults={
            "kind": kind,
            "provider": active_provider(),
            "user": user,
            "subject_type": resource_type_of(subject),
            "subject_id": str(subject.pk),
            "amount": major_to_minor(amount_usd, currency),
            "currency": currency.lower(),
            "description": description[:255],
            "params": to_json(params or {}),
            "stripe_customer_id": stripe_customer_id,
        },
    )
    return operation


def operation_unfinished_for(*, kind: str, subject) -> PaymentOperation | None:
    return (
        PaymentOperation.objects.filter(
            kind=kind, subject_type=resource_type_of(subject), subject_id=str(subject.pk), state__in=UNFINISHED_STATES
        )
        .order_by("-created_at")
        .first()
    )


def operation_after_commit(operation: PaymentOperation) -> None:
    """Runs the operation once the caller's transaction commits (a change Stripe must mirror). Any
    failure is kept on the row and retried by `reconcile_payments`; the caller's answer does not
    depend on it."""

    def run():
        try:
            operation_run(operation_id=operation.pk)
        except Exception as error:  # the change has committed: whatever failed is retried, never a 500 now
            logger.warning("payment operation %s (%s) left for reconcile: %s", operation.pk, operation.kind, error)
            _error_note(operation.pk, error)

    transaction.on_commit(run)


# Running


def operation_run(*, operation_id) -> PaymentOperation:
    """Runs, or resumes, an operation's provider steps with no transaction open, then settles it.

    Raises PaymentDeclined (the operation is settled failed), ProviderUnavailable (the operation keeps
    its state and error; running it again resumes it) or ProviderError (settled failed)."""
    operation = PaymentOperation.objects.get(pk=operation_id)
    if operation.state not in UNFINISHED_STATES:
        return operation
    _lease_take(operation)
    try:
        if operation.provider == WebhookProvider.OFFLINE:
            return operation_settle(operation_id=operation.pk, outcome=offline_outcome(operation))
        if timezone.now() - operation.created_at > IDEMPOTENCY_WINDOW:
            return operation_settle_from_provider(operation_id=operation.pk)
        try:
            outcome = STEPS[operation.kind](operation)
        except (stripe_api.PaymentDeclined, stripe_api.ProviderError) as refused:
            operation_settle(operation_id=operation.pk, outcome=Outcome(FAILED, reason=refused.detail))
            raise
        except stripe_api.ProviderUnavailable as unavailable:
            _error_note(operation.pk, unavailable)
            raise
        operation_settle(operation_id=operation.pk, outcome=outcome)
    finally:
        PaymentOperation.objects.filter(pk=operation.pk).update(run_lease_until=None)
    return PaymentOperation.objects.get(pk=operation.pk)


def _lease_take(operation: PaymentOperation) -> None:
    """One run of an operation's provider steps at a time (a double click, two job runs): the others
    are told it is in progress instead of sending the same requests again. A lease outlives a
    crashed run by PAYMENT_RUN_LEASE_SECONDS at most."""
    now = timezone.now()
    taken = (
        PaymentOperation.objects.filter(pk=operation.pk, state__in=UNFINISHED_STATES)
        .filter(Q(run_lease_until__isnull=True) | Q(run_lease_until__lt=now))
        .update(
            run_lease_until=now + timedelta(seconds=settings.PAYMENT_RUN_LEASE_SECONDS),
            attempts=F("attempts") + 1,
            updated_at=now,
        )
    )
    if not taken:
        raise OperationInProgress(
            "This payment is being processed right now; retry shortly.",
            extra={"operation_id": str(operation.pk), "retry_after": 2},
        )


def _call(method, *args, operation: PaymentOperation, step: str = "", params: dict | None = None) -> dict:
    """One provider request, answered as a plain dict (the shape webhook events carry too). A `step`
    names a creating request and gives it the operation's idempotency key for that step; reads go
    without one."""
    options = stripe_api.options(operation.idempotency_key(step)) if step else {}
    try:
        return method(*args, params=params or {}, options=options).to_dict()
    except stripe.StripeError as error:
        raise stripe_api.mapped_error(error, what=f"{operation.kind} {step or 'read'}") from error


def _record(operation: PaymentOperation, **fields) -> None:
    """Remembers what the provider created, at once and outside the caller's transaction, so a crash
    right after still leaves the ids to settle from."""
    objects = fields.pop("objects", None)
    if objects:
        operation.stripe_objects = {**operation.stripe_objects, **objects}
        fields["stripe_objects"] = operation.stripe_objects
    for name, value in fields.items():
        setattr(operation, name, value)
    PaymentOperation.objects.filter(pk=operation.pk).update(**fields, updated_at=timezone.now())


def _submitted(operation: PaymentOperation) -> None:
    if operation.state == OperationState.PENDING:
        _record(operation, state=OperationState.SUBMITTED, submitted_at=timezone.now())


def _error_note(operation_id, error: Exception) -> None:
    PaymentOperation.objects.filter(pk=operation_id).update(last_error=str(error)[:2000], updated_at=timezone.now())


def offline_outcome(operation: PaymentOperation) -> Outcome:
    """The offline provider (development, demos): every payment goes through at once."""
    reference = f"offline_{uuid.uuid4().hex}"
    facts = {"amount": operation.amount, "currency": operation.currency}
    if operation.kind in CHECKOUT_KINDS:
        facts["session_id"] = reference
    elif operation.kind == OperationKind.REFUND:
        facts["refund_id"] = reference
    return Outcome(PAID, facts=facts)


def _checkout_steps(operation: PaymentOperation) -> Outcome:
    """A Stripe Checkout Session for the user's one customer; the customer pays at its URL and
    `checkout.session.completed` settles the operation."""
    if operation.stripe_checkout_session_id:
        return Outcome(WAITING)
    params = operation.params
    if not operation.stripe_customer_id:
        _record(operation, stripe_customer_id=customer_ensure(user=operation.user))
    client = stripe_api.client()
    metadata = {
        **params.get("metadata", {}),
        "kind": CHECKOUT_METADATA_KIND[operation.kind],
        "operation_id": str(operation.pk),
    }
    price_data = {
        "currency": operation.currency,
        "unit_amount": params["list_amount"],
        "product_data": {"name": operation.description or operation.kind},
    }
    if params.get("interval"):
        price_data["recurring"] = {"interval": params["interval"]}
    session_params = {
        "mode": "subscription" if params.get("interval") else "payment",
        "customer": operation.stripe_customer_id,
        "client_reference_id": str(operation.user_id),
        "metadata": metadata,
        "line_items": [{"quantity": 1, "price_data": price_data}],
    }
    if params.get("interval"):
        session_params["subscription_data"] = {"metadata": metadata}
    else:
        session_params["payment_intent_data"] = {"metadata": metadata}
    for name in ("success_url", "cancel_url"):
        if params.get(name):
            session_params[name] = params[name]
    if params.get("discount"):
        coupon_id = _coupon_once(operation, amount=params["discount"], name=params.get("coupon_name", "Discount"))
        session_params["discounts"] = [{"coupon": coupon_id}]
    session = _call(client.v1.checkout.sessions.create, operation=operation, step="session", params=session_params)
    _record(operation, stripe_checkout_session_id=session["id"], objects={"checkout_url": session["url"]})
    _submitted(operation)
    return Outcome(WAITING)


def _charge_steps(operation: PaymentOperation) -> Outcome:
    """A one-off invoice of the operation's amount, charged to the customer's saved card. The invoice
    is created empty (pending items of the customer stay out of it), the item is attached to it, and
    it is paid: three requests, each with its own idempotency key."""
    client = stripe_api.client()
    if operation.params.get("existing_invoice"):
        _record(operation, stripe_invoice_id=operation.params["existing_invoice"])
    if not operation.stripe_invoice_id:
        if not operation.stripe_customer_id:
            raise stripe_api.ProviderError("The customer has no Stripe customer to charge.")
        invoice = _call(
            client.v1.invoices.create,
            operation=operation,
            step="invoice",
            params={
                "customer": operation.stripe_customer_id,
                "collection_method": "charge_automatically",
                "auto_advance": False,
                "pending_invoice_items_behavior": "exclude",
                "currency": operation.currency,
                "description": operation.description,
                "metadata": {**operation.params.get("metadata", {}), "operation_id": str(operation.pk)},
            },
        )
        _record(operation, stripe_invoice_id=invoice["id"], objects={"owns_invoice": True})
    if operation.stripe_objects.get("owns_invoice") and "invoice_item" not in operation.stripe_objects:
        item = _call(
            client.v1.invoice_items.create,
            operation=operation,
            step="item",
            params={
                "customer": operation.stripe_customer_id,
                "invoice": operation.stripe_invoice_id,
                "amount": operation.amount,
                "currency": operation.currency,
                "description": operation.description,
            },
        )
        _record(operation, objects={"invoice_item": item["id"]})
    _submitted(operation)
    try:
        invoice = _call(
            client.v1.invoices.pay,
            operation.stripe_invoice_id,
            operation=operation,
            step="pay",
            params={"expand": ["payments"]},
        )
    except stripe_api.PaymentActionRequired as waiting:
        _record(operation, objects={"awaiting": "customer_action"}, last_error=waiting.detail)
        return Outcome(WAITING, reason=waiting.detail)
    return invoice_outcome(invoice, operation=operation)


def invoice_outcome(invoice, *, operation: PaymentOperation | None = None) -> Outcome:
    """What an invoice's state says of its payment. `open` after pay is an asynchronous payment in
    flight (or one waiting for the customer): its webhook decides."""
    facts = invoice_facts(invoice)
    if invoice["status"] == "paid":
        return Outcome(PAID, facts=facts)
    if invoice["status"] in ("void", "uncollectible"):
        return Outcome(FAILED, facts=facts, reason=f"The invoice is {invoice['status']}.")
    if operation is not None:
        _record(operation, objects={"awaiting": "payment"})
    return Outcome(WAITING, facts=facts)


def invoice_facts(invoice) -> dict:
    payments = (invoice.get("payments") or {}).get("data") or []
    payment_intent = next(
        (
            entry["payment"].get("payment_intent")
            for entry in payments
            if (entry.get("payment") or {}).get("payment_intent") and entry.get("status") == "paid"
        ),
        None,
    )
    return {
        "invoice_id": invoice["id"],
        "customer_id": invoice.get("customer") or "",
        "payment_intent_id": payment_intent if isinstance(payment_intent, str) else "",
        "amount": invoice.get("amount_paid") or 0,
        "currency": invoice.get("currency") or "",
        "hosted_invoice_url": invoice.get("hosted_invoice_url") or "",
    }


def _refund_steps(operation: PaymentOperation) -> Outcome:
    params = operation.params
    if not operation.stripe_refund_id:
        target = (
            {"payment_intent": params["payment_intent"]}
            if params.get("payment_intent")
            else {"charge": params["charge"]}
        )
        refund = _call(
            stripe_api.client().v1.refunds.create,
            operation=operation,
            step="refund",
            params={
                **target,
                "amount": operation.amount,
                "reason": "requested_by_customer",
                "metadata": {"operation_id": str(operation.pk)},
            },
        )
        _record(operation, stripe_refund_id=refund["id"])
        _submitted(operation)
    else:
        refund = _call(stripe_api.client().v1.refunds.retrieve, operation.stripe_refund_id, operation=operation)
    return refund_outcome(refund)


def refund_outcome(refund) -> Outcome:
    facts = {"refund_id": refund["id"], "amount": refund.get("amount") or 0, "currency": refund.get("currency") or ""}
    if refund["status"] == "succeeded":
        return Outcome(PAID, facts=facts)
    if refund["status"] in ("failed", "canceled"):
        return Outcome(FAILED, facts=facts, reason=f"Stripe reports the refund {refund['status']}.")
    return Outcome(WAITING, facts=facts)


def _sync_steps(operation: PaymentOperation) -> Outcome:
    """A change Stripe's subscription must mirror: its price, its cancellation, a one-off discount,
    a later billing date. Each request is idempotent on the operation."""
    client = stripe_api.client()
    params = operation.params
    subscription_id = params["stripe_subscription_id"]
    action = params["action"]
    if action == "cancel_now":
        _call(client.v1.subscriptions.cancel, subscription_id, operation=operation, step="cancel")
    elif action == "cancel_at_period_end":
        _call(
            client.v1.subscriptions.update,
            subscription_id,
            operation=operation,
            step="update",
            params={"cancel_at_period_end": bool(params.get("value", True))},
        )
    elif action == "reprice":
        current = _call(client.v1.subscriptions.retrieve, subscription_id, operation=operation)
        item = current["items"]["data"][0]
        _call(
            client.v1.subscriptions.update,
            subscription_id,
            operation=operation,
            step="update",
            params={
                "items": [
                    {
                        "id": item["id"],
                        "price_data": {
                            "currency": operation.currency,
                            "unit_amount": params["unit_amount"],
                            "recurring": {"interval": params["interval"]},
                            "product": _id_or_blank(item["price"]["product"]),
                        },
                    }
                ],
                "metadata": params.get("metadata", {}),
                "proration_behavior": "none",
            },
        )
    elif action == "discount_once":
        coupon_id = _coupon_once(operation, amount=operation.amount, name=params.get("name", "Discount"))
        _call(
            client.v1.subscriptions.update,
            subscription_id,
            operation=operation,
            step="update",
            params={"discounts": [{"coupon": coupon_id}]},
        )
    elif action == "invoice_retries_off":
        # The project's dunning schedule owns this invoice's retries: Stripe stops its own.
        _call(
            client.v1.invoices.update,
            params["stripe_invoice_id"],
            operation=operation,
            step="update",
            params={"auto_advance": False},
        )
    elif action == "bill_next_at":
        _call(
            client.v1.subscriptions.update,
            subscription_id,
            operation=operation,
            step="update",
            params={"trial_end": params["timestamp"], "proration_behavior": "none"},
        )
    else:
        raise stripe_api.ProviderError(f"Unknown subscription change '{action}'.")
    _submitted(operation)
    return Outcome(PAID)


def _coupon_once(operation: PaymentOperation, *, amount: int, name: str) -> str:
    """A Stripe coupon of `amount` off one invoice: our coupon rules stay ours, Stripe only applies
    the amount. Created once per operation."""
    if "coupon" not in operation.stripe_objects:
        coupon = _call(
            stripe_api.client().v1.coupons.create,
            operation=operation,
            step="coupon",
            params={"amount_off": amount, "currency": operation.currency, "duration": "once", "name": name[:40]},
        )
        _record(operation, objects={"coupon": coupon["id"]})
    return operation.stripe_objects["coupon"]


STEPS = {
    **dict.fromkeys(CHECKOUT_KINDS, _checkout_steps),
    **dict.fromkeys(CHARGE_KINDS, _charge_steps),
    OperationKind.REFUND: _refund_steps,
    OperationKind.SUBSCRIPTION_SYNC: _sync_steps,
}


# Settling


@conflict_retrying
@transaction.atomic
def operation_settle(*, operation_id, outcome: Outcome) -> PaymentOperation:
    """Settles an operation from what the provider said (its answer, a webhook, reconcile), in the
    caller's transaction if there is one. Idempotent: a settled operation stays as it is."""
    # The operation row is the lock: the caller's answer, the webhook and reconcile may settle at once.
    operation = PaymentOperation.objects.select_for_update().get(pk=operation_id)
    _facts_absorb(operation, outcome.facts)
    if outcome.status == WAITING:
        if operation.state == OperationState.PENDING:
            operation.state = OperationState.SUBMITTED
            operation.submitted_at = timezone.now()
        operation.save()
        return operation
    if operation.effect:
        if outcome.status == PAID and operation.effect == OperationEffect.FAILED:
            # Money arrived for an operation already given up (a late asynchronous payment): return it.
            _refund_owed(operation, "Paid after the operation had failed.")
        operation.save()
        return operation
    if outcome.status == PAID:
        _succeed(operation, outcome.facts)
    else:
        _fail(operation, outcome.reason)
    return operation


def operation_invoice_correct(*, operation_id, invoice: dict, reason: str) -> dict:
    """Stripe's word on the paid invoice an operation that succeeded made, applied by its kind's
    effect to what the effect recorded of it: the amounts Stripe charged, which a customer balance,
    a discount or a tax can make differ from the operation's. A correction, not a movement of money
    (no payment event). In the caller's transaction, after `operation_settle`; the inbox applies an
    invoice's events in order, so this is the newest word on it. Returns {field: [before, after]}."""
    operation = PaymentOperation.objects.get(pk=operation_id)
    corrected = effect_of(operation.kind).invoice_corrected
    if corrected is None or operation.effect != OperationEffect.SUCCEEDED or invoice.get("status") != "paid":
        return {}
    return corrected(operation=operation, invoice=invoice, reason=reason)


def _facts_absorb(operation: PaymentOperation, facts: dict) -> None:
    for fact, field_name in (
        ("session_id", "stripe_checkout_session_id"),
        ("invoice_id", "stripe_invoice_id"),
        ("payment_intent_id", "stripe_payment_intent_id"),
        ("refund_id", "stripe_refund_id"),
        ("customer_id", "stripe_customer_id"),
    ):
        if facts.get(fact) and not getattr(operation, field_name):
            setattr(operation, field_name, facts[fact])


def _succeed(operation: PaymentOperation, facts: dict) -> None:
    effect = effect_of(operation.kind)
    try:
        with transaction.atomic():  # an effect that no longer applies leaves nothing of itself behind
            result = effect.succeeded(operation=operation, facts=facts)
    except EffectNotApplicable as not_applicable:
        _refund_owed(operation, str(not_applicable))
        operation.save()
        return
    if operation.kind in CHECKOUT_KINDS and operation.user_id:
        # A checkout Stripe made a customer for (one started before customers were kept) gives the user theirs.
        customer_record(user=operation.user, stripe_customer_id=facts.get("customer_id", ""))
    operation.effect = OperationEffect.SUCCEEDED
    operation.state = OperationState.SUCCEEDED
    operation.result = to_json(result)
    operation.last_error = ""
    operation.settled_at = timezone.now()
    operation.save()
    amount = facts.get("amount", operation.amount)
    if operation.kind in (*CHECKOUT_KINDS, *CHARGE_KINDS) and amount:
        # The money that arrived, as the row a refund or a dispute of it is matched to.
        payment_record(
            kind=operation.kind,
            user=operation.user,
            amount=amount,
            currency=facts.get("currency") or operation.currency,
            provider=operation.provider,
            object_id=(result or {}).get("object_id", ""),
            operation=operation,
            stripe_payment_intent_id=operation.stripe_payment_intent_id,
            stripe_invoice_id=operation.stripe_invoice_id,
            stripe_checkout_session_id=operation.stripe_checkout_session_id,
        )
    if operation.kind in PAYMENT_EVENT_TYPES:
        payment_event_record(
            event_type=PAYMENT_EVENT_TYPES[operation.kind],
            user=operation.user,
            plan_code=operation.params.get("plan_code", ""),
            customer_id=operation.stripe_customer_id,
            invoice_id=operation.stripe_invoice_id,
            subscription_id=facts.get("subscription_id", ""),
            amount=amount,
            currency=facts.get("currency") or operation.currency,
            metadata={
                **operation.params.get("metadata", {}),
                "operation_id": str(operation.pk),
                "kind": CHECKOUT_METADATA_KIND.get(operation.kind, operation.kind),
                "provider": operation.provider,
                "session_id": operation.stripe_checkout_session_id,
                "payment_intent_id": operation.stripe_payment_intent_id,
                "refund_id": operation.stripe_refund_id,
            },
            webhook_event=facts.get("webhook_event"),
        )
    _audit(operation)
    PAYMENT_OPERATIONS.labels(kind=operation.kind, state=operation.state).inc()


def _fail(operation: PaymentOperation, reason: str) -> None:
    operation.last_error = reason[:2000]
    effect = effect_of(operation.kind)
    if effect.failed is not None:
        effect.failed(operation=operation)
    operation.effect = OperationEffect.FAILED
    operation.settled_at = timezone.now()
    owned_invoice_open = operation.stripe_objects.get("owns_invoice") and not operation.stripe_objects.get("voided")
    if owned_invoice_open:
        operation.cleanup_due = OperationCleanup.VOID_INVOICE
    elif operation.kind in CHECKOUT_KINDS and operation.stripe_checkout_session_id:
        operation.cleanup_due = OperationCleanup.EXPIRE_CHECKOUT
    operation.state = OperationState.NEEDS_ATTENTION if operation.cleanup_due else OperationState.FAILED
    operation.save()
    _audit(operation)
    if operation.cleanup_due:
        transaction.on_commit(lambda: _cleanup_quietly(operation.pk))
    PAYMENT_OPERATIONS.labels(kind=operation.kind, state=OperationState.FAILED).inc()


def _refund_owed(operation: PaymentOperation, reason: str) -> None:
    logger.error("payment operation %s: %s A refund is due.", operation.pk, reason)
    operation.cleanup_due = OperationCleanup.REFUND
    operation.state = OperationState.NEEDS_ATTENTION
    operation.last_error = reason[:2000]
    transaction.on_commit(lambda: _cleanup_quietly(operation.pk))


def _audit(operation: PaymentOperation) -> None:
    audit_record(
        action=AuditAction.PROCESS,
        resource_type=resource_type_of(operation),
        resource_id=str(operation.pk),
        new_value={
            "kind": operation.kind,
            "state": operation.state,
            "effect": operation.effect,
            "amount": operation.amount,
            "currency": operation.currency,
            "subject": f"{operation.subject_type}:{operation.subject_id}",
            "stripe_invoice_id": operation.stripe_invoice_id,
            "stripe_checkout_session_id": operation.stripe_checkout_session_id,
            "stripe_refund_id": operation.stripe_refund_id,
            "cleanup_due": operation.cleanup_due,
            "error": operation.last_error,
        },
    )


# Cleanup: what is still owed at the provider after the effect was decided


def _cleanup_quietly(operation_id) -> None:
    """The cleanup, once the settling transaction has committed; what fails is left for reconcile."""
    try:
        _cleanup(operation_id)
    except Exception as error:  # committed already: never a 500 for what reconcile finishes
        logger.warning("payment operation %s: cleanup left for reconcile: %s", operation_id, error)
        _error_note(operation_id, error)


def _cleanup(operation_id) -> PaymentOperation:
    """Voids the unpaid invoice, expires the abandoned session or refunds money that arrived for
    nothing, then closes the operation. Raises the provider's error when it cannot now."""
    operation = PaymentOperation.objects.get(pk=operation_id)
    if not operation.cleanup_due or operation.provider == WebhookProvider.OFFLINE:
        return operation
    client = stripe_api.client()
    try:
        if operation.cleanup_due == OperationCleanup.VOID_INVOICE:
            invoice = _invoice_if_any(operation)
            if invoice is None:  # deleted: nothing is left to pay
                return _cleanup_done(operation.pk)
            if invoice["status"] == "paid":
                # Paid after all (the decline raced a retry): the money is returned, not kept.
                _call(
                    client.v1.refunds.create,
                    operation=operation,
                    step="return",
                    params={"payment_intent": invoice_facts(invoice)["payment_intent_id"]},
                )
            elif invoice["status"] == "draft":  # never finalized, so never payable: deleting it is enough
                _call(client.v1.invoices.delete, operation.stripe_invoice_id, operation=operation)
            elif invoice["status"] == "open":
                _call(client.v1.invoices.void_invoice, operation.stripe_invoice_id, operation=operation, step="void")
        elif operation.cleanup_due == OperationCleanup.EXPIRE_CHECKOUT:
            session = _call(
                client.v1.checkout.sessions.retrieve, operation.stripe_checkout_session_id, operation=operation
            )
            if session["status"] == "open":
                _call(client.v1.checkout.sessions.expire, session["id"], operation=operation, step="expire")
            _coupon_delete(operation)
        elif operation.cleanup_due == OperationCleanup.REFUND:
            target = operation.stripe_payment_intent_id
            _call(
                client.v1.refunds.create,
                operation=operation,
                step="return",
                params={"payment_intent": target, "metadata": {"operation_id": str(operation.pk)}},
            )
    except (stripe_api.ProviderUnavailable, stripe_api.ProviderError) as error:
        _error_note(operation.pk, error)
        raise
    return _cleanup_done(operation.pk)


def _coupon_delete(operation: PaymentOperation) -> None:
    """The one-off Stripe coupon an unpaid checkout made is removed with it (already gone is fine)."""
    coupon_id = operation.stripe_objects.get("coupon")
    if not coupon_id:
        return
    try:
        _call(stripe_api.client().v1.coupons.delete, coupon_id, operation=operation)
    except stripe_api.ProviderError as error:
        if error.extra.get("provider_code") != "resource_missing":
            raise


def _invoice_if_any(operation: PaymentOperation):
    try:
        return _call(stripe_api.client().v1.invoices.retrieve, operation.stripe_invoice_id, operation=operation)
    except stripe_api.ProviderError as error:
        if error.extra.get("provider_code") == "resource_missing":
            return None
        raise


@transaction.atomic
def _cleanup_done(operation_id) -> PaymentOperation:
    operation = PaymentOperation.objects.select_for_update().get(pk=operation_id)
    done = operation.cleanup_due
    operation.cleanup_due = OperationCleanup.NONE
    if done == OperationCleanup.VOID_INVOICE:
        operation.stripe_objects = {**operation.stripe_objects, "voided": True}
    operation.state = (
        OperationState.SUCCEEDED if operation.effect == OperationEffect.SUCCEEDED else OperationState.FAILED
    )
    if done == OperationCleanup.REFUND:
        operation.state = OperationState.FAILED  # the money went back: nothing of it remains
    operation.save()
    _audit(operation)
    return operation


# Reconciling: settle from what the provider says its objects became


def operations_to_reconcile(*, now=None) -> list:
    """Operations nobody is driving any more: unfinished ones older than
    PAYMENT_RECONCILE_AFTER_MINUTES, and those with a provider cleanup still owed."""
    now = now or timezone.now()
    stale = now - timedelta(minutes=settings.PAYMENT_RECONCILE_AFTER_MINUTES)
    return list(
        PaymentOperation.objects.filter(
            Q(state__in=UNFINISHED_STATES, updated_at__lte=stale)
            | Q(state=OperationState.NEEDS_ATTENTION) & ~Q(cleanup_due=OperationCleanup.NONE)
        )
        .order_by("created_at")
        .values_list("pk", flat=True)
    )


def operation_settle_from_provider(*, operation_id) -> PaymentOperation:
    """Asks Stripe what the operation's objects became and settles it: paid -> the effect applied
    once; never paid -> failed (its invoice voided, its session expired). An asynchronous payment
    still in flight is left to its webhook until PAYMENT_ASYNC_MAX_DAYS."""
    operation = PaymentOperation.objects.get(pk=operation_id)
    if operation.cleanup_due:
        return _cleanup(operation.pk)
    if operation.state not in UNFINISHED_STATES:
        return operation
    if operation.provider == WebhookProvider.OFFLINE:
        return operation_settle(operation_id=operation.pk, outcome=offline_outcome(operation))
    outcome = _provider_state(operation)
    settled = operation_settle(operation_id=operation.pk, outcome=outcome)
    if settled.cleanup_due:
        return _cleanup(settled.pk)
    return settled


def _provider_state(operation: PaymentOperation) -> Outcome:
    client = stripe_api.client()
    async_deadline = timezone.now() - timedelta(days=settings.PAYMENT_ASYNC_MAX_DAYS)
    if operation.kind in CHECKOUT_KINDS:
        if not operation.stripe_checkout_session_id:
            return Outcome(FAILED, reason="No checkout session was ever handed to the customer.")
        session = _call(client.v1.checkout.sessions.retrieve, operation.stripe_checkout_session_id, operation=operation)
        if session["status"] == "complete" and session.get("payment_status") in ("paid", "no_payment_required"):
            return Outcome(PAID, facts=checkout_session_facts(session))
        if session["status"] == "expired":
            return Outcome(FAILED, reason="The checkout session expired unpaid.")
        if session["status"] == "open" and operation.created_at < timezone.now() - timedelta(
            hours=settings.PAYMENT_CHECKOUT_MAX_HOURS
        ):
            return Outcome(FAILED, reason="The checkout was abandoned.")
        return Outcome(WAITING)
    if operation.kind in CHARGE_KINDS:
        if not operation.stripe_invoice_id:
            return Outcome(FAILED, reason="No invoice was created, so nothing was charged.")
        invoice = _call(client.v1.invoices.retrieve, operation.stripe_invoice_id, operation=operation)
        outcome = invoice_outcome(invoice)
        in_flight = operation.stripe_objects.get("awaiting") and operation.created_at > async_deadline
        if outcome.status == WAITING and not in_flight:
            return Outcome(FAILED, facts=outcome.facts, reason="The invoice was never paid.")
        return outcome
    if operation.kind == OperationKind.REFUND:
        if not operation.stripe_refund_id:
            return Outcome(FAILED, reason="No refund was created.")
        return refund_outcome(_call(client.v1.refunds.retrieve, operation.stripe_refund_id, operation=operation))
    return _sync_steps(operation)


def checkout_session_facts(session) -> dict:
    return {
        "session_id": session["id"],
        "customer_id": _id_or_blank(session.get("customer")),
        "subscription_id": _id_or_blank(session.get("subscription")),
        "invoice_id": _id_or_blank(session.get("invoice")),
        "payment_intent_id": _id_or_blank(session.get("payment_intent")),
        "amount": session.get("amount_total") or 0,
        "currency": session.get("currency") or "",
    }


def _id_or_blank(value) -> str:
    if not value:
        return ""
    return value if isinstance(value, str) else value.get("id", "")
