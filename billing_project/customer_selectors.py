"""The reads of the console's customer page: everything support looks at to answer a customer, in a
fixed number of queries whatever the customer's history. Like the dashboard it sits on top of every app."""

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db.models import F, Prefetch, Q
from django.utils import timezone

from audit.models import AdminAuditLog
from audit.services import resource_type_of
from coupons.models import CouponRedemption
from credits.models import (
    CreditAllocation,
    CreditDeductionLedger,
    CreditHold,
    HoldStatus,
    TokenUsageLedger,
    UserCreditBalance,
    UserCreditSource,
)
from credits.selectors import spendable
from licensing.models import LicenseActivation, PerpetualLicense
from subscriptions.models import (
    LIVE_STATUSES,
    BillingInvoice,
    PaymentTransaction,
    ProrationEvent,
    Subscription,
    SubscriptionTier,
    UserEntitlement,
)

# The newest rows of each long history; the page links to the model's list, filtered to the customer,
# for all of them. The audit rows, which no one list holds, are paged.
RECENT_ROWS = 20
AUDIT_ROWS = 50
# The customer's rows whose audit rows are looked for (the newest grants, for one).
RELATED_ROWS = 200


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    subscription: Subscription
    what: str
    detail: str


@dataclass(frozen=True)
class CustomerPage:
    user: object
    tier: str
    subscription: Subscription | None
    subscriptions: list[Subscription]
    timeline: list[TimelineEntry]
    balance: int
    held: int
    available: int
    grants: list[UserCreditSource]
    holds: list[CreditHold]
    usage: list[TokenUsageLedger]
    licenses: list[PerpetualLicense]
    redemptions: list[CouponRedemption]
    invoices: list[BillingInvoice]
    payments: list[PaymentTransaction]
    audit_rows: list[AdminAuditLog] | None
    # The histories cut at RECENT_ROWS ("usage", "redemptions", "invoices", "payments").
    cut: frozenset[str] = frozenset()
    audit_page: int = 1
    audit_older: bool = False


def _newest(queryset, name: str, cut: set) -> list:
    """The RECENT_ROWS newest rows; `name` goes into `cut` when there are older ones (one row more
    is read to know, no count)."""
    rows = list(queryset[: RECENT_ROWS + 1])
    if len(rows) > RECENT_ROWS:
        cut.add(name)
    return rows[:RECENT_ROWS]


def _subscription_timeline(subscriptions: list[Subscription]) -> list[TimelineEntry]:
    """Newest first: each subscription's start, its status changes (from its audit rows) and its
    tier changes (proration events)."""
    by_id = {str(row.pk): row for row in subscriptions}
    entries = [
        TimelineEntry(row.created_at, row, "started", f"{row.tier}, {row.billing_cycle}") for row in subscriptions
    ]
    for event in (event for row in subscriptions for event in row.proration_events.all()):
        entries.append(
            TimelineEntry(
                event.created_at,
                by_id[str(event.subscription_id)],
                f"{event.change_type} {event.from_tier} → {event.to_tier}",
                f"{event.status}, effective {event.effective_date:%Y-%m-%d}, net charge USD {event.net_charge_usd}, "
                f"credits {event.credits_adjustment:+d}",
            )
        )
    if by_id:
        status_rows = AdminAuditLog.objects.filter(
            resource_type=resource_type_of(Subscription), resource_id__in=list(by_id)
        ).only("timestamp", "resource_id", "previous_value", "new_value", "actor_email")
        for row in status_rows:
            before = (row.previous_value or {}).get("status")
            after = (row.new_value or {}).get("status")
            if before and after and before != after:
                reason = (row.new_value or {}).get("reason", "")
                entries.append(
                    TimelineEntry(
                        row.timestamp,
                        by_id[row.resource_id],
                        f"status {before} → {after}",
                        " — ".join(part for part in (row.actor_email, reason) if part),
                    )
                )
    return sorted(entries, key=lambda entry: entry.at, reverse=True)


def _audit_rows_about(user, related: dict, *, page: int) -> tuple[list[AdminAuditLog], bool]:
    """One page (AUDIT_ROWS, newest first) of the audit rows whose resource is the customer or one of
    their rows (`related`: model -> ids), and the rows of what the customer did themselves; and
    whether there are older ones."""
    about = Q(resource_type=resource_type_of(user), resource_id=str(user.pk)) | Q(actor=user)
    for model, ids in related.items():
        if ids:
            about |= Q(resource_type=resource_type_of(model), resource_id__in=[str(pk) for pk in ids])
    start = (page - 1) * AUDIT_ROWS
    rows = list(AdminAuditLog.objects.filter(about).order_by("-timestamp", "-sequence")[start : start + AUDIT_ROWS + 1])
    return rows[:AUDIT_ROWS], len(rows) > AUDIT_ROWS


def customer_page(*, user_id, include_audit: bool = True, audit_page: int = 1) -> CustomerPage:
    """The customer page of one user (raises DoesNotExist for an unknown id), with the `audit_page`th
    page of its audit rows."""
    now = timezone.now()
    cut = set()
    user = get_user_model().objects.get(pk=user_id)
    subscriptions = list(
        Subscription.objects.filter(user=user)
        .order_by("-created_at")
        .prefetch_related(
            Prefetch("proration_events", queryset=ProrationEvent.objects.order_by("-effective_date", "-created_at"))
        )
    )
    timeline = _subscription_timeline(subscriptions)
    live = next((row for row in subscriptions if row.status in LIVE_STATUSES), None)
    if live is not None:
        tier = live.tier
    else:
        tier = UserEntitlement.objects.filter(user=user).values_list("tier", flat=True).first() or SubscriptionTier.FREE
    stored = UserCreditBalance.objects.filter(user=user).values_list("amount", flat=True).first() or 0
    # In spending order, as the ledger spends them.
    grants = list(
        UserCreditSource.objects.filter(user=user, remaining__gt=0)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .select_related("allocation")
        .order_by(F("expires_at").asc(nulls_last=True), "created_at", "id")
    )
    holds = list(
        CreditHold.objects.filter(user=user, status=HoldStatus.HELD, expires_at__gt=now).order_by("expires_at")
    )
    balance = spendable(stored, (grant.remaining for grant in grants))
    held = sum(hold.amount - hold.captured_amount for hold in holds)
    usage = _newest(
        TokenUsageLedger.objects.filter(user=user)
        .select_related("provider", "deduction")
        .prefetch_related("deduction__consumptions__source")
        .order_by("-created_at"),
        "usage",
        cut,
    )
    licenses = list(
        PerpetualLicense.objects.filter(user=user)
        .order_by("-created_at")
        .prefetch_related(Prefetch("activations", queryset=LicenseActivation.objects.order_by("-activated_at")))
    )
    redemptions = _newest(
        CouponRedemption.objects.filter(user=user).select_related("coupon").order_by("-redemption_date"),
        "redemptions",
        cut,
    )
    invoices = _newest(BillingInvoice.objects.filter(user=user).order_by("-period_start"), "invoices", cut)
    payments = _newest(PaymentTransaction.objects.filter(user=user).order_by("-created_at"), "payments", cut)
    audit_rows, audit_older = None, False
    if include_audit:
        allocations = CreditAllocation.objects.filter(user=user).order_by("-created_at").values_list("pk", flat=True)
        related = {
            Subscription: [row.pk for row in subscriptions],
            PerpetualLicense: [row.pk for row in licenses],
            CreditAllocation: list(allocations[:RELATED_ROWS]),
            CreditDeductionLedger: [row.deduction_id for row in usage if row.deduction_id],
            BillingInvoice: [row.pk for row in invoices],
            PaymentTransaction: [row.pk for row in payments],
        }
        audit_rows, audit_older = _audit_rows_about(user, related, page=audit_page)
    return CustomerPage(
        user=user,
        tier=tier,
        subscription=live,
        subscriptions=subscriptions,
        timeline=timeline,
        balance=balance,
        held=held,
        available=max(balance - held, 0),
        grants=grants,
        holds=holds,
        usage=usage,
        licenses=licenses,
        redemptions=redemptions,
        invoices=invoices,
        payments=payments,
        audit_rows=audit_rows,
        cut=frozenset(cut),
        audit_page=audit_page,
        audit_older=audit_older,
    )


def customers_matching(*, query: str, limit: int = 50) -> list:
    """Users whose e-mail, username or name contains the query, or whose id it is."""
    query = query.strip()
    if not query:
        return []
    matches = Q(email__icontains=query) | Q(username__icontains=query)
    matches |= Q(first_name__icontains=query) | Q(last_name__icontains=query)
    if query.isdigit():
        matches |= Q(pk=int(query))
    return list(get_user_model().objects.filter(matches).order_by("email")[:limit])
