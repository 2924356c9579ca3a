"""Stripe-side changes mirrored onto the subscription (customer.subscription.*), and the states of a
subscription's invoices that are not payments (finalized, voided, uncollectible). Registered with
the payments inbox (subscriptions.apps) after payments' own handlers.

Order: a subscription's `provider_updated_at` is the creation time of the newest Stripe event
applied to it, through any of its objects (its invoices' payments included): an older subscription
event never overwrites what a newer event of the subscription or of its invoices set, so an older
`active` cannot undo the `past_due` of a newer failed payment.
"""

from datetime import datetime

from django.contrib.auth import get_user_model
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of, snapshot
from billing_project import sql
from billing_project.appends import update_deferred
from billing_project.enums import BillingCycle, SubscriptionTier
from billing_project.money import usd_to_cents
from payments import stripe_api
from payments.models import UNFINISHED_STATES, PaymentOperation, StripeCustomer, WebhookEvent
from payments.registry import EffectNotApplicable, Unmatched
from payments.services.inbox import event_audit, event_object, event_record, timestamp_of
from payments.services.operations import stripe_active
from subscriptions.models import (
    BillingInvoice,
    DunningAttempt,
    DunningResult,
    InvoiceStatus,
    Subscription,
    SubscriptionStatus,
    TierConfig,
)
from subscriptions.periods import period_end
from subscriptions.services.billing import dunning_pause_shift
from subscriptions.services.entitlements import entitlement_activate
from subscriptions.services.events import subscription_changed_emit, watched_fields
from subscriptions.services.invoices import invoice_amounts_update, invoice_open_record
from subscriptions.services.lifecycle import (
    period_credits_allocate,
    stripe_downgrade_withdraw,
    stripe_subscription_adopt,
    stripe_tier_change,
    subscription_transition,
    transition_allowed,
)

Status = SubscriptionStatus
# Stripe's subscription statuses, as ours. Stripe's "trialing" and "incomplete" have no counterpart
# to move to: our trials are our own, and an incomplete subscription was never activated here.
# "paused" keeps the status and takes the paid access away until it resumes (`paused_at`).
STRIPE_STATUSES = {
    "active": Status.ACTIVE,
    "past_due": Status.PAST_DUE,
    "unpaid": Status.SUSPENDED,
    "canceled": Status.CANCELLED,
    "incomplete_expired": Status.EXPIRED,
}
STRIPE_INTERVALS = {"month": BillingCycle.MONTHLY, "year": BillingCycle.ANNUAL}


def subscription_locked(stripe_subscription_id: str | None) -> Subscription | None:
    return subscription_locked_reading(stripe_subscription_id, [])[0]


def subscription_locked_statements(
    stripe_subscription_id: str | None, reads: list[sql.Statement]
) -> list[sql.Statement]:
    """What `subscription_locked_reading` reads: the subscription (locked) and its user, then `reads`."""
    if not stripe_subscription_id:
        return reads
    # FOR NO KEY UPDATE, as subscription_lock (lifecycle) explains; the user is read, not locked, in
    # the same round trip (the second read runs once the first holds the subscription's row).
    user_of_subscription = f"id = (SELECT user_id FROM {sql.table(Subscription)} WHERE stripe_subscription_id = %s)"
    return [
        (
            sql.first_statement(Subscription, "stripe_subscription_id = %s", lock="FOR NO KEY UPDATE"),
            [stripe_subscription_id],
        ),
        (sql.first_statement(get_user_model(), user_of_subscription), [stripe_subscription_id]),
        *reads,
    ]


def subscription_locked_reading(
    stripe_subscription_id: str | None, reads: list[sql.Statement]
) -> tuple[Subscription | None, list[list[tuple]]]:
    """The locked subscription with its user, and the rows of each of `reads`, run after the lock in
    the same round trip."""
    statements = subscription_locked_statements(stripe_subscription_id, reads)
    if not stripe_subscription_id:
        return None, sql.read_all(statements) if statements else []
    subscription_rows, user_rows, *results = sql.read_all(statements)
    subscription = sql.loaded(Subscription, subscription_rows)
    if subscription is not None:
        subscription.user = sql.loaded(get_user_model(), user_rows)
    return subscription, results


def newer_than_applied(subscription: Subscription, row: WebhookEvent) -> bool:
    """Events can arrive in any order: one created before the newest applied is stale."""
    created = row.event_created_at
    return created is None or subscription.provider_updated_at is None or created >= subscription.provider_updated_at


def mark_applied(subscription: Subscription, row: WebhookEvent) -> None:
    """Remembers the event as the newest applied to the subscription (saved by the caller)."""
    if newer_than_applied(subscription, row) and row.event_created_at is not None:
        subscription.provider_updated_at = row.event_created_at


def applied_save(subscription: Subscription, row: WebhookEvent) -> None:
    """Remembers the event as the newest applied to the locked subscription, and writes it when it
    moved. A plain update: this bookkeeping of event order is no change of the subscription a
    reader of its history needs (the event's own audit row names the event), and the saved model's
    history tracking would read the row again first. Written with the event's outcome, in its round
    trip: nothing reads the field back from the database meanwhile."""
    applied = subscription.provider_updated_at
    mark_applied(subscription, row)
    if subscription.provider_updated_at != applied:
        subscription.updated_at = timezone.now()
        update_deferred(subscription, ["provider_updated_at", "updated_at"])


def _unknown(row: WebhookEvent, *, stripe_subscription_id: str, metadata: dict) -> dict:
    """An event about a subscription not known here: the one a checkout of ours is still creating
    (its metadata names the unfinished operation) waits for that checkout; any other is unmatched."""
    operation_id = (metadata or {}).get("operation_id")
    if operation_id:
        waiting = PaymentOperation.objects.filter(
            pk=operation_id, state__in=UNFINISHED_STATES, stripe_checkout_session_id__gt=""
        ).first()
        if waiting is not None:
            result = {"action": "awaiting_checkout", "operation_id": str(waiting.pk)}
            event_audit(row, **result)
            return result
    raise Unmatched(f"No subscription {stripe_subscription_id} here ({row.event_type}).")


# customer.subscription.*

# Stripe's statuses of a subscription whose first payment has not been made (or a trial of Stripe's
# own): one created on Stripe's side begins here once Stripe reports it active.
NOT_YET_PAID = ("incomplete", "trialing")


def _stripe_period(stripe_subscription: dict, billing_cycle: str) -> tuple[datetime, datetime]:
    """A subscription's current period: its items' since Stripe's 2025 API versions, before that its own."""
    items = (stripe_subscription.get("items") or {}).get("data") or []
    for source in (*items[:1], stripe_subscription):
        start, end = source.get("current_period_start"), source.get("current_period_end")
        if start and end and end > start:
            return timestamp_of(start), timestamp_of(end)
    now = timezone.now()
    return now, period_end(now, billing_cycle)


def _customer_id(stripe_subscription: dict) -> str:
    customer = stripe_subscription.get("customer") or ""
    return customer.get("id", "") if isinstance(customer, dict) else customer


def adoptable_user(stripe_subscription: dict):
    """The user whose Stripe customer a subscription not known here belongs to, when it was created
    outside Checkout (a checkout's names it in its metadata: that checkout creates it); else None."""
    metadata = stripe_subscription.get("metadata") or {}
    if metadata.get("operation_id") or metadata.get("kind"):
        return None
    known = (
        StripeCustomer.objects.select_related("user")
        .filter(stripe_customer_id=_customer_id(stripe_subscription))
        .first()
    )
    return known.user if known else None


def subscription_adopted(row: WebhookEvent, stripe_subscription: dict, *, user) -> Subscription | None:
    """A subscription created outside Checkout (Stripe's dashboard, its API) for `user`'s customer
    (adoptable_user), at a price of one of our tiers: begins here as a checkout's does
    (stripe_subscription_adopt), locked. None while Stripe has not been paid for it yet. Unmatched
    when its price is no tier here or the user already has another paid subscription."""
    if stripe_subscription.get("status") in NOT_YET_PAID:
        return None
    if stripe_subscription.get("status") != "active":
        raise Unmatched(
            f"Subscription {stripe_subscription['id']} of a customer of ours is {stripe_subscription.get('status')}"
            " and was never active here."
        )
    billed = _tier_of_price(stripe_subscription)
    if billed is None:
        raise Unmatched(f"Subscription {stripe_subscription['id']} bills a price that is no tier here.")
    tier, cycle = billed
    period_start, period_end_at = _stripe_period(stripe_subscription, cycle)
    try:
        adopted = stripe_subscription_adopt(
            user=user,
            tier=tier,
            billing_cycle=cycle,
            stripe_subscription_id=stripe_subscription["id"],
            stripe_customer_id=_customer_id(stripe_subscription),
            period_start=period_start,
            period_end_at=period_end_at,
        )
    except EffectNotApplicable as refused:
        raise Unmatched(str(refused)) from refused
    return subscription_locked(adopted.stripe_subscription_id)


def _tier_of_price(
    stripe_subscription: dict, *, current_tier: str = "", default_cycle: str = BillingCycle.MONTHLY
) -> tuple[str, str] | None:
    """The tier and billing cycle Stripe now bills: what the price names (its metadata or lookup
    key), else the one catalog tier at its amount and interval (the current tier when it is one of
    several at that amount). None when it cannot tell."""
    items = (stripe_subscription.get("items") or {}).get("data") or []
    price = (items[0].get("price") or {}) if items else {}
    if not isinstance(price, dict) or not price:
        return None
    cycle = STRIPE_INTERVALS.get((price.get("recurring") or {}).get("interval"), default_cycle)
    named = (price.get("metadata") or {}).get("tier") or price.get("lookup_key")
    if named in SubscriptionTier.values:
        return named, cycle
    amount = price.get("unit_amount")
    if amount is None or (price.get("currency") or "usd") != "usd":
        return None
    at_amount = [
        config.tier
        for config in TierConfig.objects.filter(is_active=True).exclude(tier=SubscriptionTier.FREE)
        if usd_to_cents(config.price_for(cycle)) == amount
    ]
    if current_tier in at_amount:
        return current_tier, cycle
    return (at_amount[0], cycle) if len(at_amount) == 1 else None


def _tier_mirror(subscription: Subscription, stripe_subscription: dict, *, at: datetime) -> str:
    """A price changed on Stripe's side (the dashboard, the portal) moves the subscription to the
    tier Stripe now bills under the project's tier change rules (stripe_tier_change: an upgrade now
    with its prorated credits, a downgrade at the period end). Our own changes (an upgrade applied,
    a downgrade scheduled for the period end) are already here. Returns what was done, or ""."""
    billed = _tier_of_price(
        stripe_subscription, current_tier=subscription.tier, default_cycle=subscription.billing_cycle
    )
    if billed is None:
        return ""
    tier, cycle = billed
    if (tier, cycle) == (subscription.tier, subscription.billing_cycle):
        return stripe_downgrade_withdraw(subscription=subscription, at=at)
    if tier == subscription.scheduled_tier:
        return ""
    if not TierConfig.objects.filter(tier=tier, is_active=True).exists():
        return ""
    return stripe_tier_change(subscription=subscription, tier=tier, billing_cycle=cycle, at=at)


def _pause_mirror(subscription: Subscription, stripe_subscription: dict, *, at: datetime) -> str:
    """Stripe's `paused` (a trial ended without a payment method, or paused by hand) pauses the
    service as Stripe pauses the billing: the free tier's access, no new credits (those already
    granted stay spendable), no renewal, no dunning retry, grace period end or suspension. Resumed:
    the tier's access again, the current period's credits, and the retries and grace period moved
    later by the pause. `at`: when Stripe paused or resumed it (the event's creation)."""
    paused = stripe_subscription.get("status") == "paused"
    if paused and not subscription.paused_at:
        subscription.paused_at = at
        entitlement_activate(user=subscription.user, tier=SubscriptionTier.FREE)
        return "paused"
    if not paused and subscription.paused_at:
        dunning_pause_shift(subscription=subscription, paused_for=at - subscription.paused_at)
        subscription.paused_at = None
        if subscription.status == Status.ACTIVE:
            entitlement_activate(user=subscription.user, tier=subscription.tier)
            if subscription.current_period_end > timezone.now():  # else its renewal invoice allocates
                period_credits_allocate(subscription=subscription, at=timezone.now())
        return "resumed"
    return ""


def _subscription_mirror(row: WebhookEvent) -> dict:
    """customer.subscription.created / updated / paused / resumed: Stripe's status, cancellation
    (at period end, or at a date), price (tier) and pause, applied unless a newer event was."""
    stripe_subscription = event_object(row)
    subscription = subscription_locked(stripe_subscription["id"])
    if subscription is None:
        user = adoptable_user(stripe_subscription)
        if user is None:
            return _unknown(
                row, stripe_subscription_id=stripe_subscription["id"], metadata=stripe_subscription.get("metadata")
            )
        subscription = subscription_adopted(row, stripe_subscription, user=user)
        if subscription is None:
            awaiting = {"action": "awaiting_first_payment", "stripe_subscription_id": stripe_subscription["id"]}
            event_audit(row, **awaiting)
            return awaiting
    if not newer_than_applied(subscription, row):
        skipped = {"action": "stale_event_skipped", "subscription_id": str(subscription.pk)}
        event_audit(row, **skipped)
        return skipped
    previous = snapshot(subscription)
    target = STRIPE_STATUSES.get(stripe_subscription.get("status"))
    if target and target != subscription.status and transition_allowed(subscription.status, target):
        subscription_transition(
            subscription=subscription, status=target, reason=f"Stripe reports {stripe_subscription['status']}"
        )
    transitioned = watched_fields(subscription)  # the transition told its own change
    tier_change = _tier_mirror(subscription, stripe_subscription, at=row.event_created_at or timezone.now())
    pause = _pause_mirror(subscription, stripe_subscription, at=row.event_created_at or timezone.now())
    subscription.cancel_at_period_end = bool(stripe_subscription.get("cancel_at_period_end"))
    subscription.cancel_at = timestamp_of(stripe_subscription.get("cancel_at"))
    mark_applied(subscription, row)
    subscription.save()
    subscription_changed_emit(subscription=subscription, previous=transitioned)
    audit_record(
        action=AuditAction.UPDATE,
        resource_type=resource_type_of(subscription),
        resource_id=str(subscription.pk),
        previous_value=previous,
        new_value={**snapshot(subscription), "reason": f"Stripe: {row.event_type}", "stripe_event_id": row.event_id},
    )
    event_record(
        row,
        event_type=row.event_type.removeprefix("customer.").replace(".", "_"),
        user=subscription.user,
        plan_code=subscription.tier,
        customer_id=stripe_subscription.get("customer") or "",
        subscription_id=subscription.stripe_subscription_id,
    )
    return {
        "action": "subscription_updated",
        "subscription_id": str(subscription.pk),
        "subscription_status": subscription.status,
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "cancel_at": subscription.cancel_at,
        "tier": subscription.tier,
        "tier_changed": tier_change in ("upgrade", "switched"),  # a downgrade waits for the period end
        "pause": pause,
    }


def _subscription_deleted(row: WebhookEvent) -> dict:
    stripe_subscription = event_object(row)
    subscription = subscription_locked(stripe_subscription["id"])
    if subscription is None:
        return _unknown(
            row, stripe_subscription_id=stripe_subscription["id"], metadata=stripe_subscription.get("metadata")
        )
    if transition_allowed(subscription.status, Status.CANCELLED):
        subscription_transition(subscription=subscription, status=Status.CANCELLED, reason="Stripe ended it")
    applied_save(subscription, row)
    event_record(
        row,
        event_type="subscription_deleted",
        user=subscription.user,
        plan_code=subscription.tier,
        customer_id=stripe_subscription.get("customer") or "",
        subscription_id=subscription.stripe_subscription_id,
    )
    return {"action": "subscription_cancelled", "subscription_id": str(subscription.pk)}


def _trial_will_end(row: WebhookEvent) -> dict:
    """Stripe's own trial ending: our trials are our own (their reminders are ours), so it is noted."""
    stripe_subscription = event_object(row)
    subscription = subscription_locked(stripe_subscription["id"])
    if subscription is None:
        return _unknown(
            row, stripe_subscription_id=stripe_subscription["id"], metadata=stripe_subscription.get("metadata")
        )
    event_record(
        row,
        event_type="subscription_trial_will_end",
        user=subscription.user,
        plan_code=subscription.tier,
        customer_id=stripe_subscription.get("customer") or "",
        subscription_id=subscription.stripe_subscription_id,
    )
    return {"action": "trial_will_end_noted", "subscription_id": str(subscription.pk)}


# invoice.finalized / voided / marked_uncollectible of a subscription's invoice


def invoice_subscription_id(invoice: dict) -> str | None:
    """Where the invoice names its subscription: `subscription` before Stripe's 2025 API versions,
    `parent.subscription_details.subscription` since."""
    if invoice.get("subscription"):
        return invoice["subscription"]
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return details.get("subscription")


def _is_subscription_price_line(line: dict) -> bool:
    """The line of the subscription's price (not an invoice item, not a proration): since 2025 its
    `parent` is `subscription_item_details`; before, its `type` was `subscription`."""
    parent = line.get("parent") or {}
    if parent.get("type") == "subscription_item_details":
        return not (parent.get("subscription_item_details") or {}).get("proration")
    return line.get("type") == "subscription" and not line.get("proration")


def invoice_period(invoice: dict, subscription: Subscription) -> tuple[datetime, datetime]:
    """The period an invoice pays for: its subscription price line's, else any line that spans time
    (an invoice item's line starts where it ends). Without one (Stripe's invoice-level period is the
    period that ended, not the one paid for): the period after the subscription's current one for a
    renewal, else the current one."""
    lines = (invoice.get("lines") or {}).get("data") or []
    for line in sorted(lines, key=lambda line: not _is_subscription_price_line(line)):
        period = line.get("period") or {}
        if period.get("end", 0) > period.get("start", 0):
            return timestamp_of(period["start"]), timestamp_of(period["end"])
    if invoice.get("billing_reason") == "subscription_cycle":
        return subscription.current_period_end, period_end(subscription.current_period_end, subscription.billing_cycle)
    return subscription.current_period_start, subscription.current_period_end


def _invoice_metadata(invoice: dict) -> dict:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return {**(details.get("metadata") or {}), **(invoice.get("metadata") or {})}


def _invoice_state(row: WebhookEvent) -> dict:
    """finalized: the invoice is owed (an open invoice here until paid, so a late payment of an
    older one restores nothing meanwhile); voided: nothing is owed, its retries stop;
    marked_uncollectible: Stripe gave up collecting it, its retries stop and a past_due
    subscription enters its grace period, then suspension, as exhausted retries do. Each corrects
    the amounts of an invoice we hold in the same state to Stripe's (invoice_amounts_update)."""
    invoice = event_object(row)
    stripe_subscription_id = invoice_subscription_id(invoice)
    subscription = subscription_locked(stripe_subscription_id)
    if subscription is None:
        if not stripe_subscription_id:
            raise Unmatched(f"Invoice {invoice['id']} names no subscription and no payment of ours.")
        return _unknown(row, stripe_subscription_id=stripe_subscription_id, metadata=_invoice_metadata(invoice))
    local = BillingInvoice.objects.select_for_update().filter(stripe_invoice_id=invoice["id"]).first()
    corrected = {}
    if row.event_type == "invoice.finalized":
        action = "invoice_finalized"
        if local is None and invoice.get("amount_due"):
            local = _open_invoice_record(subscription, invoice)
        elif local is not None:  # the inbox skips it when older than an event of the invoice applied
            corrected = invoice_amounts_update(invoice=local, stripe_invoice=invoice, reason=f"Stripe: {row.event_id}")
    else:
        status = InvoiceStatus.VOID if row.event_type == "invoice.voided" else InvoiceStatus.UNCOLLECTIBLE
        action = f"invoice_{status}"
        if local is not None and local.status != InvoiceStatus.PAID:
            local.status = status
            local.save(update_fields=["status", "updated_at"])
            DunningAttempt.objects.filter(invoice=local, result=DunningResult.SCHEDULED).update(
                result=DunningResult.CANCELLED, updated_at=timezone.now()
            )
        if local is not None:
            corrected = invoice_amounts_update(invoice=local, stripe_invoice=invoice, reason=f"Stripe: {row.event_id}")
        if (
            status == InvoiceStatus.UNCOLLECTIBLE
            and subscription.status == Status.PAST_DUE
            and not subscription.paused_at
        ):
            subscription_transition(
                subscription=subscription, status=Status.GRACE_PERIOD, reason="Stripe marked the invoice uncollectible"
            )
    applied_save(subscription, row)
    event_record(
        row,
        event_type=action,
        user=subscription.user,
        plan_code=subscription.tier,
        customer_id=invoice.get("customer") or "",
        subscription_id=subscription.stripe_subscription_id,
        invoice_id=invoice["id"],
        currency=invoice.get("currency") or "",
    )
    return {
        "action": action,
        "invoice_id": str(local.pk) if local else None,
        "amounts_corrected": corrected,
        "subscription_id": str(subscription.pk),
        "subscription_status": subscription.status,
    }


def _open_invoice_record(subscription: Subscription, invoice: dict) -> BillingInvoice:
    period_start, period_end_at = invoice_period(invoice, subscription)
    return invoice_open_record(
        subscription=subscription,
        amount_due=invoice.get("amount_due") or 0,
        currency=invoice.get("currency") or "usd",
        period_start=period_start,
        period_end_at=period_end_at,
        stripe_invoice_id=invoice["id"],
    )


# What is read from Stripe before an invoice event is processed


def invoice_subscription_known(data_object: dict) -> sql.Statement | None:
    """A row when the invoice's subscription is known here (nothing to fetch)."""
    stripe_subscription_id = invoice_subscription_id(data_object)
    if not stripe_subscription_id:
        return None
    return sql.exists_statement(Subscription, "stripe_subscription_id = %s"), [stripe_subscription_id]


def invoice_subscription_fetch(data_object: dict) -> dict:
    """An invoice of a subscription not known here, naming no operation of ours: its subscription as
    Stripe has it (its metadata names the checkout that created it)."""
    stripe_subscription_id = invoice_subscription_id(data_object)
    if (
        not stripe_active()
        or not stripe_subscription_id
        or _invoice_metadata(data_object).get("operation_id")
        or sql.read_all([invoice_subscription_known(data_object)])[0]
    ):
        return {}
    stripe_subscription = stripe_api.object_read("subscription", stripe_subscription_id)
    return {stripe_subscription_id: stripe_subscription} if stripe_subscription else {}


HANDLERS = {
    "customer.subscription.created": _subscription_mirror,
    "customer.subscription.updated": _subscription_mirror,
    "customer.subscription.paused": _subscription_mirror,
    "customer.subscription.resumed": _subscription_mirror,
    "customer.subscription.deleted": _subscription_deleted,
    "customer.subscription.trial_will_end": _trial_will_end,
    "invoice.finalized": _invoice_state,
    "invoice.voided": _invoice_state,
    "invoice.marked_uncollectible": _invoice_state,
}
INVOICE_EVENTS = (
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.finalized",
    "invoice.voided",
    "invoice.marked_uncollectible",
)
# Each invoice event's fetcher and its `known` read (payments.registry.event_fetcher_register).
FETCHERS = dict.fromkeys(INVOICE_EVENTS, (invoice_subscription_fetch, invoice_subscription_known))
