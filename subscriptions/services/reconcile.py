"""Reconciliation with Stripe (`manage.py reconcile_stripe`, the daily beat job).

Stripe is the source of truth for what it bills; a webhook that never arrived, or failed for good,
leaves our state behind it. This compares what Stripe says of the objects of a window with what we
applied, and reports every difference:
- subscriptions (every one whose current period ended since the window's start, or has not ended:
  a subscription is created once and lives for years, so its creation date says nothing): status,
  period, cancellation at period end;
- invoices created since: status, amount due and paid, number and document links;
- the charges of the refunds created since: the amount refunded in all;
- disputes created since: status, against the newest dispute event applied here.

In three phases, so that no transaction is ever open during a Stripe call: every object of the
window is fetched first (the list endpoints, page by page); then compared (reads only); then, with
`fix`, Stripe's state is applied through the webhook handlers: each differing object becomes a
synthetic event (`reconcile:<object id>:<time>`, created now) accepted by the payments inbox, so it
is stored, audited and ordered like any event Stripe sends, each in its own transaction. Finally
the same fetched objects are compared again: what still differs is what the handlers would not
apply, for staff to look at.
"""

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import stripe
from django.db import transaction
from django.utils import timezone

from billing_project.money import major_to_minor, minor_to_major
from payments import stripe_api
from payments.models import WebhookEvent, WebhookProvider, WebhookStatus
from payments.services.inbox import webhook_event_accept
from subscriptions.models import BillingInvoice, PaymentTransaction, Subscription, SubscriptionStatus
from subscriptions.services.invoices import invoice_document_differences, invoice_document_update

logger = logging.getLogger(__name__)

PAGE_SIZE = 100
Status = SubscriptionStatus
# Our statuses that agree with each of Stripe's: our own dunning may have moved a past_due
# subscription on to grace or suspension. Stripe's trialing, incomplete and paused have no
# counterpart here (our trials are our own) and are not compared.
AGREEING_STATUSES = {
    "active": {Status.ACTIVE},
    "past_due": {Status.PAST_DUE, Status.GRACE_PERIOD, Status.SUSPENDED},
    "unpaid": {Status.SUSPENDED},
    "canceled": {Status.CANCELLED, Status.EXPIRED},
    "incomplete_expired": {Status.EXPIRED, Status.CANCELLED},
}
ENDED_AT_STRIPE = ("canceled", "incomplete_expired")
LIVE_AT_STRIPE = ("active", "past_due", "unpaid", "trialing")
INVOICE_EVENTS = {
    "paid": "invoice.paid",
    "open": "invoice.payment_failed",
    "void": "invoice.voided",
    "uncollectible": "invoice.marked_uncollectible",
}
DISPUTE_EVENTS = (
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
)
CLOSED_DISPUTE_STATUSES = ("won", "lost", "warning_closed", "prevented")
NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class Difference:
    object_type: str
    object_id: str
    field: str
    here: str
    at_stripe: str

    def __str__(self) -> str:
        return f"{self.object_type} {self.object_id} {self.field}: here {self.here}, at Stripe {self.at_stripe}"


@dataclass(frozen=True)
class StripeState:
    """What Stripe said of the window, fetched before anything is compared or applied."""

    subscriptions: list[dict]
    invoices: list[dict]
    charges: list[dict]
    disputes: list[dict]

    def counts(self) -> dict[str, int]:
        return {
            "subscriptions": len(self.subscriptions),
            "invoices": len(self.invoices),
            "refunded charges": len(self.charges),
            "disputes": len(self.disputes),
        }


@dataclass(frozen=True)
class Reconciliation:
    compared: dict[str, int]
    found: list[Difference]
    applied: list[WebhookEvent]
    documents_updated: list[str]
    remaining: list[Difference]


def stripe_reconcile(*, since: datetime, fix: bool = False) -> Reconciliation:
    """Compares Stripe's objects of the window with ours; with `fix`, applies Stripe's state through
    the webhook handlers. Raises ProviderUnavailable or ProviderError when Stripe cannot be read
    (nothing is applied then). Must be called with no transaction open."""
    state = stripe_state_fetch(since=since)
    found = differences_find(state=state)
    applied, documents = [], []
    if fix and found:
        applied, documents = differences_apply(state=state, differences=found)
    remaining = differences_find(state=state) if applied or documents else found
    return Reconciliation(
        compared=state.counts(),
        found=found,
        applied=applied,
        documents_updated=documents,
        remaining=remaining,
    )


# Fetching (network only)


def stripe_state_fetch(*, since: datetime) -> StripeState:
    """Every object of the window, page by page (`starting_after` while `has_more`)."""
    api = stripe_api.client().v1
    created = {"created": {"gte": int(since.timestamp())}}
    try:
        subscriptions = _every(api.subscriptions, {"status": "all", "current_period_end": created["created"]})
        invoices = _every(api.invoices, created)
        refunds = _every(api.refunds, created)
        disputes = _every(api.disputes, created)
        charge_ids = dict.fromkeys(refund["charge"] for refund in refunds if refund.get("charge"))
        charges = [api.charges.retrieve(charge_id).to_dict() for charge_id in charge_ids]
    except stripe.StripeError as error:
        raise stripe_api.mapped_error(error, what="reconciliation read") from error
    return StripeState(subscriptions=subscriptions, invoices=invoices, charges=charges, disputes=disputes)


def _every(service, params: dict) -> list[dict]:
    return [item.to_dict() for item in service.list(params={**params, "limit": PAGE_SIZE}).auto_paging_iter()]


# Comparing (reads only)


def differences_find(*, state: StripeState) -> list[Difference]:
    return [
        *_subscription_differences(state.subscriptions),
        *_invoice_differences(state.invoices),
        *_refund_differences(state.charges),
        *_dispute_differences(state.disputes),
    ]


def _when(seconds: int | None) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat() if seconds else "-"


def _seconds(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment else None


def _money(minor: int, currency: str) -> str:
    return f"{minor_to_major(minor, currency)} {currency.upper()}"


def _subscription_differences(theirs_all: list[dict]) -> Iterator[Difference]:
    ours_by_id = Subscription.objects.in_bulk(
        [theirs["id"] for theirs in theirs_all], field_name="stripe_subscription_id"
    )
    for theirs in theirs_all:
        yield from _subscription_compared(ours_by_id.get(theirs["id"]), theirs)


def _subscription_compared(ours: Subscription | None, theirs: dict) -> Iterator[Difference]:
    def differ(field: str, here: str, at_stripe: str) -> Difference:
        return Difference("subscription", theirs["id"], field, here, at_stripe)

    status = theirs["status"]
    if ours is None:
        if status in LIVE_AT_STRIPE:  # billed at Stripe, unknown here: its checkout never arrived
            yield differ("status", NOT_RECORDED, f"{status} (customer {theirs.get('customer') or '-'})")
        return
    if status in AGREEING_STATUSES and ours.status not in AGREEING_STATUSES[status]:
        yield differ("status", ours.status, status)
    if status in ENDED_AT_STRIPE:
        return
    item = theirs["items"]["data"][0]
    period_here = (_seconds(ours.current_period_start), _seconds(ours.current_period_end))
    period_there = (item["current_period_start"], item["current_period_end"])
    if not _same_period(period_here, period_there):
        yield differ("period", " to ".join(map(_when, period_here)), " to ".join(map(_when, period_there)))
    if ours.cancel_at_period_end != bool(theirs.get("cancel_at_period_end")):
        yield differ("cancel_at_period_end", str(ours.cancel_at_period_end), str(bool(theirs["cancel_at_period_end"])))


def _same_period(here: tuple[int, int], there: tuple[int, int]) -> bool:
    """Whether we are in Stripe's current period. Ours of a checkout starts when its event was
    applied, Stripe's when it created the subscription (seconds, or days of webhook retries, apart):
    the same period while the starts are less than half a period apart. A renewal missed here, or
    one recorded that Stripe never made, is a whole period off."""
    return abs(here[0] - there[0]) * 2 < there[1] - there[0]


def _invoice_subscription_id(invoice: dict) -> str | None:
    """The invoice's subscription, where the pinned API version puts it."""
    return ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")


def _recorded_here(invoice: dict) -> bool:
    """Whether we record an invoice in this state: a paid one, or an open one whose payment failed
    (a draft, a just-finalized one or a voided one we never saw is nothing to us)."""
    return invoice["status"] == "paid" or (invoice["status"] == "open" and invoice.get("attempt_count", 0) > 0)


def _invoice_differences(theirs_all: list[dict]) -> Iterator[Difference]:
    ours_by_id = BillingInvoice.objects.in_bulk([theirs["id"] for theirs in theirs_all], field_name="stripe_invoice_id")
    subscription_ids = {_invoice_subscription_id(theirs) for theirs in theirs_all} - {None}
    our_subscriptions = set(
        Subscription.objects.filter(stripe_subscription_id__in=subscription_ids).values_list(
            "stripe_subscription_id", flat=True
        )
    )
    for theirs in theirs_all:
        ours = ours_by_id.get(theirs["id"])
        if ours is not None:
            yield from _invoice_compared(ours, theirs)
        elif _invoice_subscription_id(theirs) in our_subscriptions and _recorded_here(theirs):
            at_stripe = f"{theirs['status']} {_money(theirs['amount_due'], theirs['currency'])}"
            yield Difference("invoice", theirs["id"], "status", NOT_RECORDED, at_stripe)


def _invoice_compared(ours: BillingInvoice, theirs: dict) -> Iterator[Difference]:
    def differ(field: str, here: str, at_stripe: str) -> Difference:
        return Difference("invoice", theirs["id"], field, here, at_stripe)

    status, currency = theirs["status"], theirs["currency"]
    if status != "draft" and ours.status != status:
        yield differ("status", ours.status, status)
    amounts = [("amount_due", ours.amount_due_usd)]
    if ours.status == status:  # a status that differs already says the paid amount does
        amounts.append(("amount_paid", ours.amount_paid_usd))
    for field, amount in amounts:
        here = major_to_minor(amount, ours.currency)
        if (here, ours.currency.lower()) != (theirs[field], currency.lower()):
            yield differ(field, _money(here, ours.currency), _money(theirs[field], currency))
    documents = invoice_document_differences(invoice=ours, stripe_invoice=theirs)
    if documents:
        yield differ(
            "documents",
            ", ".join(f"{name} {here or '-'}" for name, (here, _) in documents.items()),
            ", ".join(f"{name} {there}" for name, (_, there) in documents.items()),
        )


def _refund_differences(charges: list[dict]) -> list[Difference]:
    """The amount refunded of each charge, against the payment we recorded for it. A charge that is
    not one of our subscription payments is not compared here."""
    payments = PaymentTransaction.objects.in_bulk(
        [charge["payment_intent"] for charge in charges if charge.get("payment_intent")],
        field_name="stripe_payment_intent_id",
    )
    differences = []
    for charge in charges:
        payment = payments.get(charge.get("payment_intent"))
        if payment is None:
            continue
        here = major_to_minor(payment.refunded_amount_usd, payment.currency)
        if here != charge["amount_refunded"]:
            differences.append(
                Difference(
                    "charge",
                    charge["id"],
                    "amount_refunded",
                    _money(here, payment.currency),
                    _money(charge["amount_refunded"], charge["currency"]),
                )
            )
    return differences


def _disputes_applied(dispute_ids: list[str]) -> dict[str, str]:
    """The status in the newest dispute event processed here, by dispute."""
    rows = (
        WebhookEvent.objects.filter(
            provider=WebhookProvider.STRIPE,
            event_type__in=DISPUTE_EVENTS,
            status=WebhookStatus.PROCESSED,
            payload__data__object__id__in=dispute_ids,
        )
        .order_by("event_created_at", "received_at")
        .values_list("payload__data__object__id", "payload__data__object__status")
    )
    return dict(rows)


def _dispute_differences(disputes: list[dict]) -> list[Difference]:
    applied = _disputes_applied([dispute["id"] for dispute in disputes]) if disputes else {}
    return [
        Difference("dispute", dispute["id"], "status", applied.get(dispute["id"], NOT_RECORDED), dispute["status"])
        for dispute in disputes
        if applied.get(dispute["id"]) != dispute["status"]
    ]


# Applying (through the webhook handlers)


def differences_apply(*, state: StripeState, differences: list[Difference]) -> tuple[list[WebhookEvent], list[str]]:
    """Stripe's state of each differing object, through the inbox as a synthetic event (one per
    object, each in its own transaction); invoices first, so that a renewal paid at Stripe moves the
    period before the subscription's own state is applied. An invoice's number and links, which no
    handler decides on, are copied directly where its event did not bring them."""
    by_object = defaultdict(list)
    for difference in differences:
        by_object[difference.object_type, difference.object_id].append(difference)
    now = int(timezone.now().timestamp())
    events, documents = [], []
    for invoice in sorted(state.invoices, key=lambda invoice: invoice.get("created") or 0):
        fields = {difference.field for difference in by_object.get(("invoice", invoice["id"]), [])}
        if fields - {"documents"} and invoice["status"] in INVOICE_EVENTS:
            events.append(_accept(INVOICE_EVENTS[invoice["status"]], invoice, now=now))
        if "documents" in fields and _documents_copy(invoice):
            documents.append(invoice["id"])
    for subscription in state.subscriptions:
        found = by_object.get(("subscription", subscription["id"]))
        if found and found[0].here != NOT_RECORDED:  # one unknown here needs its checkout, not this
            ended = subscription["status"] in ENDED_AT_STRIPE
            events.append(
                _accept(
                    "customer.subscription.deleted" if ended else "customer.subscription.updated", subscription, now=now
                )
            )
    for charge in state.charges:
        if ("charge", charge["id"]) in by_object:
            events.append(_accept("charge.refunded", charge, now=now))
    for dispute in state.disputes:
        found = by_object.get(("dispute", dispute["id"]))
        if found:
            events.append(_accept(_dispute_event_type(dispute, seen=found[0].here != NOT_RECORDED), dispute, now=now))
    return events, documents


def _dispute_event_type(dispute: dict, *, seen: bool) -> str:
    if dispute["status"] in CLOSED_DISPUTE_STATUSES:
        return "charge.dispute.closed"
    return "charge.dispute.updated" if seen else "charge.dispute.created"


def _accept(event_type: str, data_object: dict, *, now: int) -> WebhookEvent:
    event_id = f"reconcile:{data_object['id']}:{now}"
    event = {
        "id": event_id,
        "object": "event",
        "api_version": stripe.api_version,
        "created": now,
        "type": event_type,
        "livemode": bool(data_object.get("livemode")),
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": data_object},
    }
    row, _ = webhook_event_accept(event_id=event_id, event_type=event_type, event=event)
    if row.status == WebhookStatus.FAILED:
        logger.warning("reconcile: %s (%s) failed: %s", event_id, event_type, row.error)
    return row


@transaction.atomic
def _documents_copy(stripe_invoice: dict) -> bool:
    invoice = BillingInvoice.objects.select_for_update().filter(stripe_invoice_id=stripe_invoice["id"]).first()
    return invoice is not None and invoice_document_update(invoice=invoice, stripe_invoice=stripe_invoice)
