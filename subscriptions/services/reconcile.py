"""Reconciliation with Stripe (`manage.py reconcile_stripe`, the daily beat job).

Stripe is the source of truth for what it bills; a webhook that never arrived, or failed for good,
leaves our state behind it. This compares what Stripe says of the objects of a window with what we
applied, and reports every difference:
- subscriptions (every one whose current period ended since the window's start, or has not ended:
  a subscription is created once and lives for years, so its creation date says nothing): status,
  period, cancellation at period end;
- invoices created since: status, amount due and paid and currency (minor units), number and
  document links;
- the charges of the refunds created since: the amount refunded in all, against the payment
  received here (`payments.Payment`, matched by charge, then payment intent, as the refund handlers
  match it);
- disputes created since: open, won or lost, against that payment's dispute state (Stripe's status
  read by the handlers' policy, payments.services.refunds.dispute_state: `prevented` is won); a
  dispute closed here is final, as it is for the handlers, so Stripe's appeal of it is not compared.
A charge or a dispute of no payment here is not ours to compare (its events are kept unmatched).

In three phases, so that no transaction is ever open during a Stripe call: every object of the
window is fetched first (the list endpoints, page by page, refunds with their charge); then compared
(reads only); then, with `fix`, Stripe's state is applied through the webhook handlers: each
differing object becomes a synthetic event (`reconcile:<object id>:<time>`, created now) accepted
by the payments inbox, so it is stored, audited and ordered like any event Stripe sends, each in
its own transaction. Finally the same fetched objects are compared again, the subscriptions that
still differ read again first (a handler's effect may have reached Stripe once its transaction
committed: a full refund here cancels the subscription there): what still differs is what the
handlers would not apply, for staff to look at.
"""

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import stripe
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing_project.money import minor_to_major
from payments import stripe_api
from payments.models import DisputeStatus, Payment, WebhookEvent, WebhookStatus
from payments.services.inbox import webhook_event_accept
from payments.services.refunds import dispute_state
from subscriptions.models import BillingInvoice, Subscription, SubscriptionStatus
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
    remaining = found
    if applied or documents:
        remaining = differences_find(state=state)
        state = subscriptions_reread(state=state, differences=remaining)
        remaining = differences_find(state=state)
    return Reconciliation(
        compared=state.counts(),
        found=found,
        applied=applied,
        documents_updated=documents,
        remaining=remaining,
    )


# Fetching (network only)


def stripe_state_fetch(*, since: datetime) -> StripeState:
    """Every object of the window, page by page (`starting_after` while `has_more`). The refunds come
    with their charge expanded, so the charges refunded in the window (a refund of a charge made
    before it included) are read with the refunds' pages rather than one request each."""
    api = stripe_api.client().v1
    created = {"created": {"gte": int(since.timestamp())}}
    try:
        subscriptions = _every(api.subscriptions, {"status": "all", "current_period_end": created["created"]})
        invoices = _every(api.invoices, created)
        refunds = _every(api.refunds, {**created, "expand": ["data.charge"]})
        disputes = _every(api.disputes, created)
    except stripe.StripeError as error:
        raise stripe_api.mapped_error(error, what="reconciliation read") from error
    charges = {}
    for refund in refunds:
        if isinstance(refund.get("charge"), dict):
            charges.setdefault(refund["charge"]["id"], refund["charge"])
    return StripeState(
        subscriptions=subscriptions, invoices=invoices, charges=list(charges.values()), disputes=disputes
    )


def subscriptions_reread(*, state: StripeState, differences: list[Difference]) -> StripeState:
    """The state with each subscription that still differs as Stripe has it now (no transaction
    open): what the handlers did here may have been sent to Stripe once it committed."""
    differing = {difference.object_id for difference in differences if difference.object_type == "subscription"}
    if not differing:
        return state
    api = stripe_api.client().v1
    try:
        subscriptions = [
            api.subscriptions.retrieve(theirs["id"]).to_dict() if theirs["id"] in differing else theirs
            for theirs in state.subscriptions
        ]
    except stripe.StripeError as error:
        raise stripe_api.mapped_error(error, what="reconciliation read") from error
    return StripeState(
        subscriptions=subscriptions, invoices=state.invoices, charges=state.charges, disputes=state.disputes
    )


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
    disputed = _disputed(ours_by_id.values())
    for theirs in theirs_all:
        ours = ours_by_id.get(theirs["id"])
        yield from _subscription_compared(ours, theirs, disputed=ours is not None and ours.pk in disputed)


def _disputed(subscriptions) -> set:
    """The subscriptions suspended here by an open dispute of one of their payments, which Stripe
    bills on as if nothing happened (the payment policy, payments.services.refunds)."""
    suspended = {subscription.pk for subscription in subscriptions if subscription.status == Status.SUSPENDED}
    if not suspended:
        return set()
    invoices = dict(
        BillingInvoice.objects.filter(subscription_id__in=suspended, stripe_invoice_id__isnull=False).values_list(
            "stripe_invoice_id", "subscription_id"
        )
    )
    open_disputes = Payment.objects.filter(dispute_status=DisputeStatus.OPEN).filter(
        Q(stripe_invoice_id__in=list(invoices)) | Q(object_id__in=[str(pk) for pk in suspended])
    )
    disputed = set()
    for stripe_invoice_id, object_id in open_disputes.values_list("stripe_invoice_id", "object_id"):
        disputed.add(invoices.get(stripe_invoice_id))
        disputed.update(pk for pk in suspended if str(pk) == object_id)
    return disputed - {None}


def _subscription_compared(ours: Subscription | None, theirs: dict, *, disputed: bool) -> Iterator[Difference]:
    def differ(field: str, here: str, at_stripe: str) -> Difference:
        return Difference("subscription", theirs["id"], field, here, at_stripe)

    status = theirs["status"]
    if ours is None:
        if status in LIVE_AT_STRIPE:  # billed at Stripe, unknown here: its checkout never arrived
            yield differ("status", NOT_RECORDED, f"{status} (customer {theirs.get('customer') or '-'})")
        return
    agreeing = AGREEING_STATUSES.get(status)
    if agreeing and ours.status not in agreeing and not (disputed and status in LIVE_AT_STRIPE):
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
    fields = ["amount_due"]
    if ours.status == status:  # a status that differs already says the paid amount does
        fields.append("amount_paid")
    for field in fields:
        here = getattr(ours, field)
        if (here, ours.currency.lower()) != (theirs[field], currency.lower()):
            yield differ(field, _money(here, ours.currency), _money(theirs[field], currency))
    documents = invoice_document_differences(invoice=ours, stripe_invoice=theirs)
    if documents:
        yield differ(
            "documents",
            ", ".join(f"{name} {here or '-'}" for name, (here, _) in documents.items()),
            ", ".join(f"{name} {there}" for name, (_, there) in documents.items()),
        )


def _payments_of(objects: list[dict]) -> dict[str, Payment]:
    """The payment received here of each charge, refund or dispute (by the object's id): matched
    by charge id, then payment intent, as the refund and dispute handlers match them."""

    def charge_of(obj: dict) -> str:
        return obj["id"] if obj["object"] == "charge" else _id(obj.get("charge"))

    charge_ids = {charge_of(obj) for obj in objects} - {""}
    intent_ids = {_id(obj.get("payment_intent")) for obj in objects} - {""}
    by_charge, by_intent = {}, {}
    for payment in Payment.objects.filter(
        Q(stripe_charge_id__in=charge_ids) | Q(stripe_payment_intent_id__in=intent_ids)
    ):
        if payment.stripe_charge_id:
            by_charge[payment.stripe_charge_id] = payment
        if payment.stripe_payment_intent_id:
            by_intent[payment.stripe_payment_intent_id] = payment
    found = {}
    for obj in objects:
        payment = by_charge.get(charge_of(obj)) or by_intent.get(_id(obj.get("payment_intent")))
        if payment is not None:
            found[obj["id"]] = payment
    return found


def _id(value) -> str:
    if not value:
        return ""
    return value if isinstance(value, str) else value.get("id", "")


def _refund_differences(charges: list[dict]) -> list[Difference]:
    """The amount refunded of each charge, against the payment received here for it."""
    payments = _payments_of(charges)
    differences = []
    for charge in charges:
        payment = payments.get(charge["id"])
        if payment is None:
            continue
        here, currency = payment.amount_refunded, payment.currency
        if (here, currency) != (charge["amount_refunded"], charge["currency"].lower()):
            differences.append(
                Difference(
                    "charge",
                    charge["id"],
                    "amount_refunded",
                    _money(here, currency),
                    _money(charge["amount_refunded"], charge["currency"]),
                )
            )
    return differences


def _dispute_differences(disputes: list[dict]) -> list[Difference]:
    """Each dispute's state (open, won, lost), against the payment it disputes."""
    payments = _payments_of(disputes)
    differences = []
    for dispute in disputes:
        payment, state = payments.get(dispute["id"]), dispute_state(dispute["status"])
        if payment is None:
            continue
        here = payment.disputes.get(dispute["id"], NOT_RECORDED)
        if here in (DisputeStatus.WON, DisputeStatus.LOST) and state == DisputeStatus.OPEN:
            continue  # closed here for good: the handlers never reopen it
        if here != state:
            differences.append(Difference("dispute", dispute["id"], "status", here, dispute["status"]))
    return differences


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
        if ("dispute", dispute["id"]) in by_object:
            closed = dispute_state(dispute["status"]) != DisputeStatus.OPEN
            events.append(_accept("charge.dispute.closed" if closed else "charge.dispute.created", dispute, now=now))
    return events, documents


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
