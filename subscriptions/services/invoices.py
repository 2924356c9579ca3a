"""Invoices and the payments against them. Idempotent on Stripe's ids, so a repeated or reordered
webhook finds the row it already wrote.

Amounts come in the minor units of their currency (Stripe's integers: USD cents, JPY yen, KWD fils)
and are kept so; the `_usd` fields beside them are exact for USD and hold another currency's amount
to two places, never converted."""

from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of
from billing_project import sql
from billing_project.money import minor_to_major, usd_round
from billing_project.rows import row_insert, row_insert_unless_present, rows_insert_unless_present
from payments.models import Payment
from payments.services.refunds import payment_amount_correct
from subscriptions.models import BillingInvoice, InvoiceStatus, PaymentStatus, PaymentTransaction, Subscription
from subscriptions.services.events import invoice_paid_emit, invoice_payment_failed_emit


def _usd_field(amount: int, currency: str) -> Decimal:
    return usd_round(minor_to_major(amount, currency))


def _invoice_get_or_create(
    *, subscription: Subscription, stripe_invoice_id: str | None, payment: Payment | None = None, **defaults
) -> tuple[BillingInvoice, bool, bool | None]:
    """The invoice, whether it is new, and whether `payment` (an unsaved row, or None) was inserted
    with it: tried, unless present, only when the invoice is new (None: not tried)."""
    defaults = {"user": subscription.user, "subscription": subscription, **defaults}
    if not stripe_invoice_id:
        return BillingInvoice.objects.create(**defaults), True, None
    invoice = sql.new_row(BillingInvoice, stripe_invoice_id=stripe_invoice_id, **defaults)
    if payment is None:
        created, payment_inserted = row_insert_unless_present(invoice, unique_fields=("stripe_invoice_id",)), None
    else:
        created, payment_inserted = rows_insert_unless_present([(invoice, ("stripe_invoice_id",)), (payment, None)])
    if created:
        return invoice, True, payment_inserted
    return BillingInvoice.objects.select_for_update().get(stripe_invoice_id=stripe_invoice_id), False, None


def _payment_record(*, invoice: BillingInvoice, stripe_payment_intent_id: str | None, **fields) -> None:
    fields = {
        "user": invoice.user,
        "invoice": invoice,
        "subscription": invoice.subscription,
        "amount_usd": invoice.amount_due_usd,
        "amount": invoice.amount_due,
        "currency": invoice.currency,
        **fields,
    }
    if stripe_payment_intent_id:
        PaymentTransaction.objects.update_or_create(stripe_payment_intent_id=stripe_payment_intent_id, defaults=fields)
    else:
        row_insert(sql.new_row(PaymentTransaction, **fields), ahead=True)


def invoice_settle(*, invoice: BillingInvoice, stripe_payment_intent_id: str | None = None) -> bool:
    """Marks an invoice paid with its successful payment. False when it already was."""
    if invoice.status == InvoiceStatus.PAID:
        return False
    invoice.status = InvoiceStatus.PAID
    invoice.amount_paid_usd = invoice.amount_due_usd
    invoice.amount_paid = invoice.amount_due
    invoice.paid_at = timezone.now()
    invoice.save(update_fields=["status", "amount_paid_usd", "amount_paid", "paid_at", "updated_at"])
    _payment_succeeded_record(invoice=invoice, stripe_payment_intent_id=stripe_payment_intent_id)
    return True


def _payment_succeeded_record(*, invoice: BillingInvoice, stripe_payment_intent_id: str | None) -> None:
    """The invoice just became paid (written paid, or settled): its payment, and invoice.paid."""
    invoice_paid_emit(invoice=invoice)
    _payment_record(
        invoice=invoice,
        stripe_payment_intent_id=stripe_payment_intent_id,
        status=PaymentStatus.SUCCEEDED,
        failure_reason="",
        completed_at=invoice.paid_at,
    )


def invoice_paid_record(
    *,
    subscription: Subscription,
    amount: int,
    currency: str = "usd",
    period_start: datetime,
    period_end_at: datetime,
    description: str,
    stripe_invoice_id: str | None = None,
    stripe_payment_intent_id: str | None = None,
    discount: int = 0,
    stripe_invoice: dict | None = None,
    payment: Payment | None = None,
) -> tuple[BillingInvoice, bool, bool | None]:
    """The paid invoice of a subscription and its successful payment: `amount` (minor units of
    `currency`) paid after `discount` (a coupon, same units) was taken off. A new invoice is written
    paid at once, with Stripe's document fields when `stripe_invoice` (its payload) is given.
    `payment`: the money received (payments' `payment_new`, not recorded yet), inserted unless present
    in the new invoice's round trip. Returns the invoice, whether it is new, and whether `payment`
    was inserted (None: not tried, as the invoice was there)."""
    currency = currency.lower()
    amount_usd = _usd_field(amount, currency)
    invoice, created, payment_inserted = _invoice_get_or_create(
        subscription=subscription,
        stripe_invoice_id=stripe_invoice_id,
        payment=payment,
        subtotal_usd=_usd_field(amount + discount, currency),
        discount_usd=_usd_field(discount, currency),
        amount_due_usd=amount_usd,
        amount_due=amount,
        amount_paid_usd=amount_usd,
        amount_paid=amount,
        status=InvoiceStatus.PAID,
        paid_at=timezone.now(),
        currency=currency,
        period_start=period_start,
        period_end=period_end_at,
        description=description,
        **invoice_document_fields(stripe_invoice or {}),
    )
    if created:
        _payment_succeeded_record(invoice=invoice, stripe_payment_intent_id=stripe_payment_intent_id)
    else:
        invoice_settle(invoice=invoice, stripe_payment_intent_id=stripe_payment_intent_id)
    return invoice, created, payment_inserted


def invoice_failed_record(
    *,
    subscription: Subscription,
    amount_due: int,
    currency: str = "usd",
    period_start: datetime,
    period_end_at: datetime,
    reason: str,
    stripe_invoice_id: str | None = None,
    stripe_payment_intent_id: str | None = None,
    stripe_invoice: dict | None = None,
) -> BillingInvoice:
    """The open invoice of a failed payment and the failed payment. An invoice paid meanwhile (the
    events crossed) stays paid. `stripe_invoice` (the payload) gives it Stripe's document fields
    first, so what is told of the failure links to the page where the customer pays."""
    currency = currency.lower()
    invoice, _, _ = _invoice_get_or_create(
        subscription=subscription,
        stripe_invoice_id=stripe_invoice_id,
        subtotal_usd=_usd_field(amount_due, currency),
        amount_due_usd=_usd_field(amount_due, currency),
        amount_due=amount_due,
        currency=currency,
        period_start=period_start,
        period_end=period_end_at,
        description="Renewal",
        status=InvoiceStatus.OPEN,
    )
    if stripe_invoice:
        invoice_document_update(invoice=invoice, stripe_invoice=stripe_invoice)
    if invoice.status == InvoiceStatus.PAID:
        return invoice
    _payment_record(
        invoice=invoice,
        stripe_payment_intent_id=stripe_payment_intent_id,
        status=PaymentStatus.FAILED,
        failure_reason=reason[:1000],
    )
    invoice_payment_failed_emit(invoice=invoice, reason=reason)
    return invoice


# What Stripe shows the customer of an invoice, by our field name and Stripe's.
INVOICE_DOCUMENT_FIELDS = {"number": "number", "hosted_invoice_url": "hosted_invoice_url", "invoice_pdf": "invoice_pdf"}


def invoice_document_fields(stripe_invoice: dict) -> dict[str, str]:
    """The document fields Stripe filled in an invoice payload, by our field name."""
    return {field: stripe_invoice[key] for field, key in INVOICE_DOCUMENT_FIELDS.items() if stripe_invoice.get(key)}


def invoice_document_differences(*, invoice: BillingInvoice, stripe_invoice: dict) -> dict[str, tuple[str, str]]:
    """The document fields Stripe has a value for that our row does not show: {field: (ours, Stripe's)}.
    A field Stripe does not fill (a draft has no number yet) is never a difference."""
    return {
        field: (getattr(invoice, field), stripe_invoice[key])
        for field, key in INVOICE_DOCUMENT_FIELDS.items()
        if stripe_invoice.get(key) and getattr(invoice, field) != stripe_invoice[key]
    }


def invoice_document_update(*, invoice: BillingInvoice, stripe_invoice: dict) -> bool:
    """Keeps Stripe's number, hosted page and PDF of an invoice on our row, from an invoice payload
    (a webhook's, or one reconcile fetched). Stripe fills them when it finalizes the invoice; a
    payload without them never blanks what we have. The caller holds the row. True when it changed."""
    changed = invoice_document_differences(invoice=invoice, stripe_invoice=stripe_invoice)
    for field, (_, value) in changed.items():
        setattr(invoice, field, value)
    if changed:
        invoice.save(update_fields=[*changed, "updated_at"])
    return bool(changed)


def invoice_amounts_update(*, invoice: BillingInvoice, stripe_invoice: dict, reason: str) -> dict:
    """Stripe's amounts of an invoice we hold (the amount due, the amount paid, the currency), from a
    payload in the state our row is in (the inbox applies each invoice's events in order, so it is
    the newest). A correction of what was recorded, not a movement of money: no payment event, an
    audit row; the invoice's payments follow it. An invoice whose payment has refunds keeps its
    amounts (what those refunds mean against the new amount is for staff). The caller holds the row.
    Returns {field: [before, after]} of what changed."""
    if stripe_invoice.get("status") != invoice.status or stripe_invoice.get("amount_due") is None:
        return {}
    currency = (stripe_invoice.get("currency") or invoice.currency).lower()
    target = {"amount_due": stripe_invoice["amount_due"], "currency": currency}
    if invoice.status == InvoiceStatus.PAID and stripe_invoice.get("amount_paid") is not None:
        target["amount_paid"] = stripe_invoice["amount_paid"]
    changed = {name: [getattr(invoice, name), to] for name, to in target.items() if getattr(invoice, name) != to}
    if not changed:
        return {}
    payments = PaymentTransaction.objects.select_for_update().filter(invoice=invoice)
    if any(payment.refunded_amount for payment in payments) or _refunded_as_received(invoice):
        return {}
    for field, value in target.items():
        setattr(invoice, field, value)
    invoice.amount_due_usd = _usd_field(invoice.amount_due, currency)
    invoice.amount_paid_usd = _usd_field(invoice.amount_paid, currency)
    invoice.subtotal_usd = invoice.amount_due_usd + invoice.discount_usd
    invoice.save(update_fields=[*target, "amount_due_usd", "amount_paid_usd", "subtotal_usd", "updated_at"])
    for payment in payments:
        amount = invoice.amount_paid if payment.status == PaymentStatus.SUCCEEDED else invoice.amount_due
        payment.amount, payment.amount_usd, payment.currency = amount, _usd_field(amount, currency), currency
        payment.save(update_fields=["amount", "amount_usd", "currency", "updated_at"])
    if invoice.status == InvoiceStatus.PAID and invoice.stripe_invoice_id:
        payment_amount_correct(
            stripe_invoice_id=invoice.stripe_invoice_id, amount=invoice.amount_paid, currency=currency
        )
    audit_record(
        action=AuditAction.UPDATE,
        resource_type=resource_type_of(invoice),
        resource_id=str(invoice.pk),
        previous_value={field: before for field, (before, _) in changed.items()},
        new_value={**{field: after for field, (_, after) in changed.items()}, "reason": reason},
    )
    return changed


def operation_invoice_corrected(*, operation, invoice: dict, reason: str) -> dict:
    """The paid invoice one of our charges made (an upgrade's, a renewal's, a retry's), as a newer
    event of Stripe's states it (payments.services.operations.operation_invoice_correct): its number
    and links, and its amounts by invoice_amounts_update's rules."""
    local = BillingInvoice.objects.select_for_update().filter(stripe_invoice_id=invoice["id"]).first()
    if local is None:
        return {}
    invoice_document_update(invoice=local, stripe_invoice=invoice)
    return invoice_amounts_update(invoice=local, stripe_invoice=invoice, reason=reason)


def _refunded_as_received(invoice: BillingInvoice) -> bool:
    """Refunds recorded on the money received for the invoice (those of a kind whose refunds are
    only recorded, such as an upgrade's charge, never reach its PaymentTransaction)."""
    return bool(invoice.stripe_invoice_id) and (
        Payment.objects.filter(stripe_invoice_id=invoice.stripe_invoice_id, amount_refunded__gt=0).exists()
    )


def invoice_open_record(
    *,
    subscription: Subscription,
    amount_due: int,
    currency: str = "usd",
    period_start: datetime,
    period_end_at: datetime,
    stripe_invoice_id: str,
) -> BillingInvoice:
    """An invoice Stripe finalized for the subscription: owed (open) until its payment arrives.
    `amount_due` in minor units of `currency`."""
    currency = currency.lower()
    invoice, _, _ = _invoice_get_or_create(
        subscription=subscription,
        stripe_invoice_id=stripe_invoice_id,
        subtotal_usd=_usd_field(amount_due, currency),
        amount_due_usd=_usd_field(amount_due, currency),
        amount_due=amount_due,
        currency=currency,
        period_start=period_start,
        period_end=period_end_at,
        description="Renewal",
        status=InvoiceStatus.OPEN,
    )
    return invoice
