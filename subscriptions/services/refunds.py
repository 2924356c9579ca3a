"""What a refund or a dispute of a subscription's payment does (registered with payments.registry;
payments.services.refunds matches the event to the payment and decides when each runs).

- Every change of the refunded amount (a failed refund lowers it) is mirrored on the invoice's
  payment (PaymentTransaction).
- A full refund (or a lost dispute) of a period's payment claws back that period's unspent credits
  (through the credits app's locked balance, one ledger row; spent credits stay spent, credits live
  holds reserve stay with the calls in flight, neither the balance nor `available` goes below zero)
  and, when the period is not over, ends the paid access: the subscription is cancelled now (the
  user is back on the free tier) and Stripe's subscription is cancelled once the transaction commits.
  A full refund of a period already over only claws back its credits.
- An open dispute suspends the subscription (through past_due, as the state machine allows:
  entitlements drop to the free tier); a dispute won makes a suspended subscription active again.
- A full refund (or a lost dispute) of an upgrade's prorated charge undoes the upgrade while it is
  the subscription's latest change in the period it was made (still on the upgraded tier, period not
  over): the earlier tier, price and entitlements come back and the upgrade's prorated credits are
  clawed back (spent or held ones stay). Otherwise (the period renewed, another change since) it is
  recorded only, as undoing it would take away what was paid for later. An open or won dispute of an
  upgrade's charge is recorded only: the period's own payment still pays for the access.
"""

from django.core.exceptions import ValidationError
from django.utils import timezone

from credits.models import CreditAllocation, CreditSource
from credits.services import allocations_claw_back
from payments.models import OperationKind, Payment
from subscriptions.models import (
    LIVE_STATUSES,
    BillingInvoice,
    ProrationEvent,
    ProrationStatus,
    Subscription,
    SubscriptionStatus,
)
from subscriptions.selectors import last_transition_reason
from subscriptions.services.billing import payment_refund_recorded
from subscriptions.services.lifecycle import (
    stripe_subscription_sync,
    subscription_lock,
    subscription_transition,
    transition_allowed,
    upgrade_revert,
)

Status = SubscriptionStatus
REFUND_REASON = "The payment of the period was refunded in full"
DISPUTE_REASON = "The payment is disputed"


def _paid_for(payment: Payment) -> tuple[Subscription | None, BillingInvoice | None]:
    """The subscription (locked) and the invoice a payment paid."""
    invoice = None
    if payment.stripe_invoice_id:
        invoice = BillingInvoice.objects.filter(stripe_invoice_id=payment.stripe_invoice_id).first()
    subscription_id = invoice.subscription_id if invoice is not None else None
    if invoice is None and payment.kind == OperationKind.DUNNING_RETRY:
        invoice = _by_pk(BillingInvoice, payment.object_id)
        subscription_id = invoice.subscription_id if invoice is not None else None
    elif subscription_id is None:
        subscription_id = payment.object_id
    subscription = _by_pk(Subscription.objects.select_for_update(), subscription_id)
    return subscription, invoice


def _by_pk(queryset, pk):
    if not pk:
        return None
    try:
        return queryset.filter(pk=pk).first()
    except ValidationError:  # not a UUID: nothing of ours
        return None


def subscription_payment_refunded(*, payment: Payment) -> dict:
    subscription, invoice = _paid_for(payment)
    if subscription is None:
        return {"subscription_id": None}
    if invoice is not None:
        period_start, period_end = invoice.period_start, invoice.period_end
    else:
        period_start, period_end = subscription.current_period_start, subscription.current_period_end
    allocations = CreditAllocation.objects.filter(
        subscription_id=subscription.pk,
        source=CreditSource.SUBSCRIPTION,
        period_start__gte=period_start,
        period_start__lt=period_end,
    ).values_list("pk", flat=True)
    clawed_back = allocations_claw_back(
        user_id=subscription.user_id, allocation_ids=list(allocations), reason=REFUND_REASON, subscription=subscription
    )
    access_ended = period_end > timezone.now() and transition_allowed(subscription.status, Status.CANCELLED)
    if access_ended:
        subscription_transition(subscription=subscription, status=Status.CANCELLED, reason=REFUND_REASON)
        stripe_subscription_sync(subscription=subscription, action="cancel_now", reason=REFUND_REASON)
    return {
        "subscription_id": str(subscription.pk),
        "access_ended": access_ended,
        "credits_clawed_back": clawed_back,
    }


def subscription_payment_disputed(*, payment: Payment) -> dict:
    subscription, _ = _paid_for(payment)
    if subscription is None:
        return {"subscription_id": None}
    if subscription.status == Status.ACTIVE:
        # The state machine reaches suspended through past_due: the disputed money is withdrawn, so
        # the subscription is behind on its payment first.
        subscription_transition(subscription=subscription, status=Status.PAST_DUE, reason=DISPUTE_REASON)
    suspended = transition_allowed(subscription.status, Status.SUSPENDED)
    if suspended:
        subscription_transition(subscription=subscription, status=Status.SUSPENDED, reason=DISPUTE_REASON)
    return {"subscription_id": str(subscription.pk), "suspended": suspended}


def subscription_dispute_won(*, payment: Payment) -> dict:
    subscription, _ = _paid_for(payment)
    if subscription is None:
        return {"subscription_id": None}
    # Only a suspension the dispute made is lifted: one for another reason (dunning) stays.
    restored = (
        subscription.status == Status.SUSPENDED and last_transition_reason(subscription=subscription) == DISPUTE_REASON
    )
    if restored:
        subscription_transition(subscription=subscription, status=Status.ACTIVE, reason="The dispute was won")
    return {"subscription_id": str(subscription.pk), "restored": restored}


def subscription_refund_recorded(*, payment: Payment) -> None:
    payment_refund_recorded(payment=payment)


# An upgrade's prorated charge

UPGRADE_REFUND_REASON = "The upgrade's prorated charge was refunded in full"


def upgrade_payment_refunded(*, payment: Payment) -> dict:
    event = _by_pk(ProrationEvent.objects, payment.object_id)
    if event is None:
        return {"proration_event_id": None, "reverted": False}
    # The subscription is locked before its change, as the upgrade's own settling locks them.
    subscription = subscription_lock(event.subscription_id)
    event = ProrationEvent.objects.select_for_update().get(pk=event.pk)
    latest = (
        event.status == ProrationStatus.APPLIED
        and subscription.status in LIVE_STATUSES
        and subscription.tier == event.to_tier
        and subscription.current_period_start <= event.effective_date
        and subscription.current_period_end > timezone.now()
    )
    clawed_back = upgrade_revert(subscription=subscription, event=event, reason=UPGRADE_REFUND_REASON) if latest else 0
    return {
        "proration_event_id": str(event.pk),
        "subscription_id": str(subscription.pk),
        "reverted": latest,
        "tier": subscription.tier,
        "credits_clawed_back": clawed_back,
    }


def upgrade_payment_disputed(*, payment: Payment) -> dict:
    return {"proration_event_id": payment.object_id or None, "suspended": False}


def upgrade_dispute_won(*, payment: Payment) -> dict:
    return {"proration_event_id": payment.object_id or None, "restored": False}
