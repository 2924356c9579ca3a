"""The money customers paid (`Payment`), and the refunds and disputes that return it.

Matching, with the objects of the pinned Stripe API version: a charge, a refund and a dispute name
the charge and its payment intent; an invoice names neither (its `payments` list of InvoicePayment
objects does, and so does the `invoice_payment.paid` event); a subscription-mode checkout session
names only its invoice (`payment_intent` is null). So every paid checkout and invoice records a
`Payment` with whichever of these ids it knows, later events add the others, and a refund or a
dispute is matched by charge id, then payment intent id.

Policy (also in the README):
- `charge.refunded` reports Stripe's total so far (`amount_refunded`), each `refund.*` one refund
  (kept by its id, its status only moving forward); the larger of what is recorded and what is
  reported wins, so an older partial refund arriving after the full one changes nothing.
- The refunded amount is lowered only by a refund Stripe reports failed or canceled (`refund.failed`,
  `refund.updated`), once, by that refund's amount: the amount it added when it was counted here, or,
  first seen failed, as much of it as a charge's total had counted without naming it. A charge's total
  reported before a refund failed no longer counts that refund. The payment's status follows
  (`refunded` -> `partially_refunded` -> `succeeded`), and so does the owner's record (the invoice's
  payment). What a full refund had already done (a license revoked, a period's access ended and its
  credits clawed back) stays done: it is recorded (`refund_failed`, audited) and left to staff, never
  granted back by itself.
- A partial refund is recorded: the payment is `partially_refunded`, access stays.
- A full refund (the refunded amount reaches what was paid) is the owner's reaction: a
  license is revoked; a subscription period's paid access ends and the unspent credits of that
  period are clawed back (credits already spent stay spent; the balance never goes below zero); an
  upgrade (of a subscription's tier, of a license's version line) is undone while nothing has been
  built on it since.
- A dispute suspends the access while it is open; won, the access is restored; lost, it is treated
  as a full refund. A dispute's state only moves forward (open -> won | lost), so a late
  `charge.dispute.created` after its close changes nothing. Stripe's `prevented` (the card network
  stopped the chargeback before it was filed: no money taken) and `warning_closed` (an inquiry that
  never became a chargeback) close it in our favour, as won. A dispute first known here already won
  suspended nothing and, on balance, took no money: it is recorded, with no payment event and no
  reaction (a subscription suspended for another reason stays so).
- A charge, refund or dispute of no recorded payment is acknowledged, never retried for ever.

Each event is applied in the inbox's transaction with its effects and one audit row; each movement
of money writes one `PaymentEvent` (a second event about the same refund moves nothing and writes none)
and one outbound event: payment.succeeded when a payment is first recorded, payment.refunded each
time the refunded amount grows.
A refund staff issue (`payment_refund_record`, from the refund operation once the provider confirms
it) takes the same path, keyed by its refund id, so Stripe's later events about it change nothing.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of
from billing_project import sql
from billing_project.enums import EventType
from billing_project.money import minor_to_text
from billing_project.outbound import event_emit
from billing_project.rows import row_insert_unless_present
from payments.models import DisputeStatus, Payment, PaymentOperation, PaymentStatus, WebhookEvent
from payments.registry import Unmatched, payment_reactions_of
from payments.services.events import payment_event_record

STRIPE_IDS = ("stripe_payment_intent_id", "stripe_charge_id", "stripe_invoice_id", "stripe_checkout_session_id")
# A refund's status only moves forward; these count as money on its way back to the customer.
REFUND_STATUS_ORDER = {"requires_action": 0, "pending": 1, "succeeded": 2, "failed": 3, "canceled": 3}
REFUND_COUNTED = ("pending", "succeeded")
REFUND_FAILED = ("failed", "canceled")
# Stripe's dispute statuses that close a dispute (the stripe SDK's Dispute.status); every other one
# (needs_response, under_review, their warning_ and appeal_ forms) is a dispute still open.
DISPUTE_CLOSED = {
    "won": DisputeStatus.WON,
    "warning_closed": DisputeStatus.WON,
    "prevented": DisputeStatus.WON,
    "lost": DisputeStatus.LOST,
}


def dispute_state(stripe_status: str | None) -> str:
    """A Stripe dispute status as the payment's dispute state: open, won or lost."""
    return DISPUTE_CLOSED.get(stripe_status or "", DisputeStatus.OPEN)


# Recording what was paid


def payment_record(*, unrecorded: bool = False, **fields) -> Payment:
    """Records a payment once, whichever event about it comes first (the checkout, the invoice, its
    InvoicePayment): a payment already recorded under one of the ids gains the ids it lacked.
    `fields`: `payment_new`'s. `unrecorded`: the caller found no record of the payment, so the insert
    is tried before the lookup (a round trip fewer when it is new; the lookup follows when it was not)."""
    return payment_new_record(payment_new(**fields), unrecorded=unrecorded)


def payment_new(
    *,
    kind: str,
    user,
    amount: int,
    currency: str,
    provider: str,
    object_id: str = "",
    operation: PaymentOperation | None = None,
    **stripe_ids: str,
) -> Payment:
    """The row of a payment as its first record would write it, unsaved (`payment_new_record`)."""
    return sql.new_row(
        Payment,
        kind=kind,
        user=user,
        object_id=str(object_id or ""),
        operation=operation,
        provider=provider,
        amount=amount,
        currency=currency.lower(),
        paid_at=timezone.now(),
        **{name: stripe_ids.get(name) or "" for name in STRIPE_IDS},
    )


def payment_new_record(payment: Payment, *, unrecorded: bool = False, inserted: bool | None = None) -> Payment:
    """`payment_record` of a row of `payment_new`. `inserted`: whether the caller's insert of the row
    unless present (rows.rows_insert_unless_present, with a write of its own) inserted it; None: not
    tried. Returns the payment's row, `payment` when it is new."""
    ids = {name: getattr(payment, name) for name in STRIPE_IDS}
    found = None if unrecorded or inserted is not None else _payment_locked(ids)
    if found is None:
        if inserted is None:
            inserted = row_insert_unless_present(payment, unique_fields=None)
        if inserted:
            data = payment_data(payment)
            event_emit(type=EventType.PAYMENT_SUCCEEDED, subject=f"payment:{payment.pk}", data=data, user=payment.user)
            return payment
        # A concurrent first record of the same payment won the unique ids: this one finds it.
        found = _payment_locked(ids)
    _ids_complete(found, ids, object_id=payment.object_id, operation=payment.operation)
    return found


def payment_data(payment: Payment) -> dict:
    """What payment.succeeded and payment.refunded say of the money received."""
    return {
        "id": str(payment.pk),
        "user_id": str(payment.user_id) if payment.user_id else None,
        "kind": payment.kind,
        "object_id": payment.object_id,
        "provider": payment.provider,
        "amount": minor_to_text(payment.amount, payment.currency),
        "amount_refunded": minor_to_text(payment.amount_refunded, payment.currency),
        "currency": payment.currency,
        "status": payment.status,
        "paid_at": payment.paid_at.isoformat(),
    }


def _payment_locked(ids: dict) -> Payment | None:
    present = {name: value for name, value in ids.items() if value}
    if not present:
        return None
    # The payment row is the lock of its refunds and disputes: events about it apply one at a time.
    match = " OR ".join(f"{sql.column(Payment, name)} = %s" for name in present)
    return sql.first(Payment, match, list(present.values()), order_by="created_at", lock="FOR UPDATE")


def _ids_complete(payment: Payment, ids: dict, *, object_id="", operation=None) -> None:
    changed = [name for name, value in ids.items() if value and not getattr(payment, name)]
    for name in changed:
        setattr(payment, name, ids[name])
    if object_id and not payment.object_id:
        payment.object_id = str(object_id)
        changed.append("object_id")
    if operation is not None and payment.operation_id is None:
        payment.operation = operation
        changed.append("operation")
    if changed:
        payment.save(update_fields=[*changed, "updated_at"])


def payment_amount_correct(*, stripe_invoice_id: str, amount: int, currency: str) -> bool:
    """The amount Stripe says an invoice's payment was: a correction of what was recorded, not a
    movement of money (no payment event). A payment with refunds keeps its amount (what they mean
    against it is for staff to decide). True when it changed."""
    payment = _payment_locked({"stripe_invoice_id": stripe_invoice_id})
    currency = currency.lower()
    if payment is None or payment.amount_refunded or (payment.amount, payment.currency) == (amount, currency):
        return False
    payment.amount, payment.currency = amount, currency
    payment.save(update_fields=["amount", "currency", "updated_at"])
    return True


def invoice_payment_ids(invoice: dict) -> dict:
    """The payment intent and charge of an invoice's paid InvoicePayment, when the invoice carries
    them; an endpoint on an API version before 2025-03-31 still sends them on the invoice itself."""
    for entry in (invoice.get("payments") or {}).get("data") or []:
        if entry.get("status") == "paid":
            return _payment_ids(entry.get("payment") or {})
    return _payment_ids(invoice)


def _payment_ids(payment: dict) -> dict:
    return {
        "stripe_payment_intent_id": _id(payment.get("payment_intent")),
        "stripe_charge_id": _id(payment.get("charge")),
    }


def _id(value) -> str:
    if not value:
        return ""
    return value if isinstance(value, str) else value.get("id", "")


# Webhook handlers (registered by payments.apps)


def invoice_payment_paid(row: WebhookEvent) -> dict | None:
    """`invoice_payment.paid`: links an invoice's payment to its payment intent and charge."""
    invoice_payment = row.payload["data"]["object"]
    payment = _payment_locked({"stripe_invoice_id": _id(invoice_payment.get("invoice"))})
    if payment is None:
        return None
    _ids_complete(payment, _payment_ids(invoice_payment.get("payment") or {}))
    return {"action": "payment_linked", "payment_id": str(payment.pk)}


def _payment_matched(*, charge_id: str, payment_intent_id: str) -> Payment | None:
    payment = _payment_locked({"stripe_charge_id": charge_id}) if charge_id else None
    if payment is None and payment_intent_id:
        payment = _payment_locked({"stripe_payment_intent_id": payment_intent_id})
    if payment is not None and charge_id and not payment.stripe_charge_id:
        _ids_complete(payment, {"stripe_charge_id": charge_id})
    return payment


@dataclass(frozen=True)
class News:
    """Where a refund or a dispute was learnt: a Stripe event, or a refund operation staff ran."""

    event_id: str
    event_type: str
    created_at: datetime | None
    customer_id: str = ""
    webhook_event: WebhookEvent | None = None
    operation_id: str = ""


def _news_of(row: WebhookEvent) -> News:
    return News(
        event_id=row.event_id,
        event_type=row.event_type,
        created_at=row.event_created_at,
        customer_id=_id(row.payload["data"]["object"].get("customer")),
        webhook_event=row,
    )


def charge_refunded(row: WebhookEvent) -> dict | None:
    charge = row.payload["data"]["object"]
    payment = _payment_matched(charge_id=charge["id"], payment_intent_id=_id(charge.get("payment_intent")))
    if payment is None:
        raise Unmatched(f"No payment here for charge {charge['id']} ({row.event_type}).")
    listed = (charge.get("refunds") or {}).get("data") or []
    return _refunds_apply(_news_of(row), payment, reported_total=charge.get("amount_refunded") or 0, refunds=listed)


def refund_changed(row: WebhookEvent) -> dict | None:
    """`refund.created`, `refund.updated`, `refund.failed`: one refund, by its id."""
    refund = row.payload["data"]["object"]
    payment = _payment_matched(charge_id=_id(refund.get("charge")), payment_intent_id=_id(refund.get("payment_intent")))
    if payment is None:
        raise Unmatched(f"No payment here for the charge of refund {refund['id']} ({row.event_type}).")
    return _refunds_apply(_news_of(row), payment, reported_total=0, refunds=[refund])


@transaction.atomic
def payment_refund_record(*, payment_id, refund_id: str, amount: int, operation_id) -> dict:
    """A refund staff issued and the provider confirmed (the offline provider at once), recorded on
    the money received exactly as Stripe's event about it would be: by its refund id, so a later
    `charge.refunded` or `refund.*` about the same refund moves nothing again."""
    payment = Payment.objects.select_for_update().get(pk=payment_id)
    news = News(event_id="", event_type="refund_operation", created_at=timezone.now(), operation_id=str(operation_id))
    return _refunds_apply(news, payment, reported_total=0, refunds=[{"id": refund_id, "amount": amount}])


def _counted(refunds: dict) -> int:
    return sum(entry["amount"] for entry in refunds.values() if entry["status"] in REFUND_COUNTED)


def _failed_after(entry: dict, moment: datetime | None) -> bool:
    """Whether a refund known failed had not failed yet when Stripe reported a charge's total."""
    if entry["status"] not in REFUND_FAILED:
        return False
    failed_at = entry.get("failed_at")
    return moment is None or failed_at is None or datetime.fromisoformat(failed_at) > moment


def _refunds_apply(news: News, payment: Payment, *, reported_total: int, refunds: list) -> dict:
    previous = {"amount_refunded": payment.amount_refunded, "status": payment.status}
    unnamed = max(payment.amount_refunded - _counted(payment.refunds), 0)  # counted from a charge's total alone
    lowered, first_seen_failed, newly_failed = 0, 0, []
    for refund in refunds:
        known = payment.refunds.get(refund["id"], {})
        status = refund.get("status") or "succeeded"
        if known.get("status") in REFUND_FAILED:
            continue  # failed or canceled is final
        if REFUND_STATUS_ORDER.get(status, 0) < REFUND_STATUS_ORDER.get(known.get("status"), -1):
            continue  # an older state of a refund already recorded further on
        entry = {"amount": refund.get("amount") or 0, "status": status}
        if status in REFUND_FAILED:
            newly_failed.append(refund)
            if known.get("status") in REFUND_COUNTED:
                lowered += known["amount"]
            else:
                first_seen_failed += entry["amount"]
            entry["failed_at"] = (news.created_at or timezone.now()).isoformat()
        payment.refunds[refund["id"]] = entry
    lowered += min(first_seen_failed, unnamed)
    recorded = max(payment.amount_refunded - lowered, 0)
    if reported_total:
        # Stripe's total leaves failed refunds out, except in a report made before they failed.
        reported_total -= sum(
            entry["amount"] for entry in payment.refunds.values() if _failed_after(entry, news.created_at)
        )
    total = min(payment.amount, max(recorded, reported_total, _counted(payment.refunds)))
    change = total - payment.amount_refunded
    was_full = payment.status == PaymentStatus.REFUNDED
    payment.amount_refunded = total
    payment.status = (
        PaymentStatus.REFUNDED
        if total == payment.amount
        else PaymentStatus.PARTIALLY_REFUNDED
        if total
        else PaymentStatus.SUCCEEDED
    )
    payment.save(update_fields=["refunds", "amount_refunded", "status", "updated_at"])
    reactions = payment_reactions_of(payment.kind)
    effect = None
    if change > 0:
        _movement(news, payment, event_type="refund", amount=change)
        event_emit(
            type=EventType.PAYMENT_REFUNDED,
            subject=f"payment:{payment.pk}",
            data={**payment_data(payment), "refunded_now": minor_to_text(change, payment.currency)},
            user=payment.user,
        )
    for refund in newly_failed:
        _movement(news, payment, event_type="refund_failed", amount=refund.get("amount") or 0)
    if change and reactions is not None and reactions.refund_recorded is not None:
        reactions.refund_recorded(payment=payment)
    fully_now = change > 0 and payment.status == PaymentStatus.REFUNDED and not was_full
    if fully_now and payment.dispute_status != DisputeStatus.LOST and reactions is not None:
        effect = reactions.refunded_fully(payment=payment)
    action = (
        "refund_recorded" if change > 0 else "refund_failed_recorded" if newly_failed else "refund_already_recorded"
    )
    return _applied(news, payment, action=action, previous=previous, effect=effect)


def dispute_changed(row: WebhookEvent) -> dict | None:
    """`charge.dispute.created` and `charge.dispute.closed`."""
    dispute = row.payload["data"]["object"]
    payment = _payment_matched(
        charge_id=_id(dispute.get("charge")), payment_intent_id=_id(dispute.get("payment_intent"))
    )
    if payment is None:
        raise Unmatched(f"No payment here for the charge of dispute {dispute['id']} ({row.event_type}).")
    previous = {"dispute_status": payment.dispute_status, "status": payment.status}
    status = dispute_state(dispute.get("status"))
    known = payment.disputes.get(dispute["id"])
    if known in (DisputeStatus.WON, DisputeStatus.LOST) or known == status:
        return _applied(_news_of(row), payment, action="dispute_already_recorded", previous=previous)
    payment.disputes[dispute["id"]] = status
    payment.dispute_status = status
    payment.save(update_fields=["disputes", "dispute_status", "updated_at"])
    won_unseen = status == DisputeStatus.WON and known != DisputeStatus.OPEN
    if not won_unseen:
        _movement(_news_of(row), payment, event_type=f"dispute_{status}", amount=dispute.get("amount"))
    reactions = payment_reactions_of(payment.kind)
    effect = None
    if reactions is not None and not won_unseen:
        if status == DisputeStatus.OPEN:
            effect = reactions.dispute_opened(payment=payment)
        elif status == DisputeStatus.WON:
            effect = reactions.dispute_won(payment=payment)
        elif payment.status != PaymentStatus.REFUNDED:
            effect = reactions.refunded_fully(payment=payment)
    return _applied(_news_of(row), payment, action=f"dispute_{status}", previous=previous, effect=effect)


def _movement(news: News, payment: Payment, *, event_type: str, amount) -> None:
    payment_event_record(
        event_type=event_type,
        user=payment.user,
        plan_code=payment.operation.params.get("plan_code", "") if payment.operation_id else "",
        customer_id=news.customer_id,
        invoice_id=payment.stripe_invoice_id,
        amount=amount,
        currency=payment.currency,
        metadata={
            "stripe_event_id": news.event_id,
            "stripe_event_type": news.event_type,
            **({"operation_id": news.operation_id} if news.operation_id else {}),
            "payment_id": str(payment.pk),
            "charge_id": payment.stripe_charge_id,
            "payment_intent_id": payment.stripe_payment_intent_id,
        },
        webhook_event=news.webhook_event,
    )


def _applied(news: News, payment: Payment, *, action: str, previous: dict, effect=None) -> dict:
    current = {
        "amount_refunded": payment.amount_refunded,
        "status": payment.status,
        "dispute_status": payment.dispute_status,
    }
    audit_record(
        action=AuditAction.PROCESS,
        resource_type=resource_type_of(payment),
        resource_id=str(payment.pk),
        previous_value=previous,
        new_value={
            **current,
            "stripe_event_id": news.event_id,
            "event_type": news.event_type,
            "operation_id": news.operation_id,
            "effect": effect,
        },
    )
    return {
        "action": action,
        "payment_id": str(payment.pk),
        "kind": payment.kind,
        "amount": payment.amount,
        "currency": payment.currency,
        **current,
        "effect": effect,
    }


HANDLERS = {
    "invoice_payment.paid": invoice_payment_paid,
    "charge.refunded": charge_refunded,
    "refund.created": refund_changed,
    "refund.updated": refund_changed,
    "refund.failed": refund_changed,
    "charge.dispute.created": dispute_changed,
    "charge.dispute.closed": dispute_changed,
}
