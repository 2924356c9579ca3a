"""Demo activity for a development or demo database: five weeks of a living product, lived day by day
through the apps' services so the ledgers, the audit trail and the daily summaries stay consistent.
Like the dashboard it sits on top of every app.

Customers sign up over the weeks; trials start, convert (some with a coupon), lapse or are still
running; enterprise customers pay at once and their monthly renewals fall in the weeks, one of them
declined first and paid by the dunning retry the next night; customers use the LLM gateway each day,
redeem a credits coupon, get a goodwill grant, one cancels at the period end and one is partly
refunded. Each night the periodic jobs run as beat would (renewals and allocations, ended trials,
dunning, expired credits, the usage and coupon rollups).

The ledgers and the audit trail are append-only and stamped with the time they are written, so each
step is run with the clock set to its moment in the past (time-machine): the rows are written once,
in time order, by the same code that writes them in production."""

import random
import secrets
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import time_machine
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from billing_project.email_verification import email_is_verified, email_verification_token, email_verify
from billing_project.enums import SubscriptionTier
from billing_project.errors import PaymentRequired
from billing_project.money import usd_to_cents
from billing_project.net import ClientInfo
from coupons.models import CouponRedemption, RedemptionStatus
from coupons.services.analytics import coupon_analytics_snapshot
from coupons.services.campaigns import demo_coupons_seed
from coupons.services.redemption import coupon_redeem
from credits.codes import ErrorCode as CreditsErrorCode
from credits.services import credits_expire, holds_expire, pricing_catalog_seed
from credits.services.grants import credit_grant_by_staff
from credits.services.ledger import usage_rollup_day
from credits.services.usage import UsageEvent, usage_record
from credits.usage_objects import TokenBreakdown
from payments.models import WebhookProvider
from payments.services.operations import active_provider
from subscriptions import jobs
from subscriptions.models import BillingInvoice, InvoiceStatus, PaymentTransaction, Subscription, SubscriptionStatus
from subscriptions.periods import period_end
from subscriptions.services import (
    account_register,
    dunning_run,
    invoice_payment_failed,
    subscription_cancel,
    subscription_start,
    tier_catalog_seed,
)
from subscriptions.services.billing import payment_refund
from subscriptions.services.lifecycle import subscription_lock

DEMO_EMAIL_DOMAIN = "demo.example.com"
# Five weeks: the first customers' monthly renewals fall in them, the dashboard's 30 days are full.
DEMO_DAYS = 35
PAYS, TRIAL_LAPSES, TRIAL_RUNNING = "pays", "lapses", "running"
# (tier, customers, what becomes of them: PAYS (a trial converted, or bought at sign-up where the tier has no
# trial), a trial that lapses, or one still running)
DEMO_MIX = (
    (SubscriptionTier.FREE, 8, None),
    (SubscriptionTier.PRO, 2, TRIAL_LAPSES),
    (SubscriptionTier.PRO, 2, TRIAL_RUNNING),
    (SubscriptionTier.PRO, 8, PAYS),
    (SubscriptionTier.PRO_MAX, 5, PAYS),
    (SubscriptionTier.ENTERPRISE_PRO, 3, PAYS),
    (SubscriptionTier.ENTERPRISE_MAX, 2, PAYS),
)
TRIALS = (SubscriptionTier.PRO, SubscriptionTier.PRO_MAX)
DEMO_MODELS = (("openai", "gpt-4o"), ("openai", "gpt-4-turbo"), ("anthropic", "claude-3-5-sonnet"))
NIGHTLY_JOBS_AT = time(0, 10)
DECLINE_REASON = "Demo: the card was declined (insufficient funds)."


class DemoRefused(Exception):
    """The demo activity would charge a real payment provider."""


@dataclass(frozen=True)
class DemoActivity:
    days: int
    customers: int
    subscriptions: int
    usage_events: int
    redemptions: int
    grants: int
    renewals: int
    declined_payments: int
    refunds: int


@dataclass
class _Customer:
    number: int
    tier: str
    story: str | None
    signup_day: int
    paid_day: int | None = None
    user: object = None


def demo_customers():
    return get_user_model().objects.filter(email__endswith=f"@{DEMO_EMAIL_DOMAIN}")


@transaction.atomic
def demo_activity_seed(*, seed: int = 18) -> DemoActivity | None:
    """Creates the demo activity of the DEMO_DAYS days before today, or nothing (None) when its
    customers exist already. All of it or none: a run that fails leaves no demo customers, so the
    next run starts again. Safe in one transaction because the offline provider calls no network
    service."""
    if active_provider() != WebhookProvider.OFFLINE:
        raise DemoRefused("The demo activity needs the offline payment provider (PAYMENTS_PROVIDER=offline).")
    if demo_customers().exists():
        return None
    first_day = timezone.localdate() - timedelta(days=DEMO_DAYS)
    chooser = random.Random(seed)
    tier_catalog_seed()
    pricing_catalog_seed()
    demo_coupons_seed()
    staff = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    demo = _Demo(customers=_cast(chooser), chooser=chooser, staff=staff)
    zone = timezone.get_current_timezone()
    for index in range(DEMO_DAYS + 1):  # the last is today, up to now
        day = first_day + timedelta(days=index)
        now = timezone.now()
        # Stopped, so a dunning retry scheduled a day after last night's failure is due tonight.
        with time_machine.travel(min(datetime.combine(day, NIGHTLY_JOBS_AT, tzinfo=zone), now), tick=False):
            demo.nightly_jobs(previous_day=day - timedelta(days=1))
        for moment, step in sorted(demo.day_steps(index), key=lambda planned: planned[0]):
            at = datetime.combine(day, moment, tzinfo=zone)
            if at < now:
                with time_machine.travel(at, tick=True):
                    step()
    usage_rollup_day(day=timezone.localdate())
    coupon_analytics_snapshot(day=timezone.localdate())
    customers = [customer.user for customer in demo.customers]
    redemptions = CouponRedemption.objects.filter(user__in=customers, status=RedemptionStatus.SUCCESS).count()
    return DemoActivity(
        days=DEMO_DAYS,
        customers=len(customers),
        redemptions=redemptions,
        renewals=BillingInvoice.objects.filter(
            user__in=customers, description="Renewal", status=InvoiceStatus.PAID, amount_paid__gt=0
        ).count(),
        declined_payments=demo.counts["declined_payments"],
        **{name: demo.counts[name] for name in ("subscriptions", "usage_events", "grants", "refunds")},
    )


def _cast(chooser: random.Random) -> list[_Customer]:
    """Who signs up on which day (0 is the first of the DEMO_DAYS) and when a converting trial is paid.
    The first two enterprise customers sign up on the first days, so their renewals are due within
    the weeks; lapsed trials end, and running ones started, within them."""
    last = DEMO_DAYS - 1
    customers = []
    early_enterprise = iter((0, 1))
    for tier, how_many, story in DEMO_MIX:
        for _ in range(how_many):
            if story == TRIAL_LAPSES:
                signup_day = chooser.randint(0, last - 16)
            elif story == TRIAL_RUNNING:
                signup_day = chooser.randint(last - 9, last)
            elif tier in TRIALS:
                signup_day = chooser.randint(0, last - 4)
            elif story == PAYS:
                signup_day = next(early_enterprise, None)
                signup_day = chooser.randint(2, last - 2) if signup_day is None else signup_day
            else:
                signup_day = chooser.randint(0, last)
            paid_day = None
            if story == PAYS:
                paid_day = signup_day + chooser.randint(2, min(12, last - signup_day)) if tier in TRIALS else signup_day
            customers.append(_Customer(len(customers) + 1, tier, story, signup_day, paid_day))
    return customers


class _Demo:
    """The demo's customers and what each does on each day, and the nightly jobs."""

    def __init__(self, *, customers: list[_Customer], chooser: random.Random, staff):
        self.customers = customers
        self.chooser = chooser
        self.staff = staff
        self.counts = Counter()
        self.declined: Subscription | None = None
        enterprise = [c for c in customers if c.story == PAYS and c.tier not in TRIALS]
        self.declines_renewal = enterprise[0] if enterprise else None
        paid = [c for c in customers if c.paid_day is not None]
        self.refunded = min(paid, key=lambda c: (c.paid_day, c.number)) if paid else None
        self.cancels = next(
            (c for c in customers if c.tier == SubscriptionTier.PRO and c.paid_day and c.paid_day + 4 < DEMO_DAYS), None
        )

    def day_steps(self, index: int) -> list[tuple[time, Callable[[], None]]]:
        """The day's steps, each at its moment: sign-ups in the morning, payments and support around
        noon, usage all day (from noon on the sign-up day). The caller leaves out today's steps after now."""
        steps = []
        for customer in self.customers:
            if customer.signup_day == index:
                steps.append((self._moment(8, 12), lambda c=customer: self.sign_up(c)))
            if customer.user is None and customer.signup_day != index:
                continue
            days_in = index - customer.signup_day
            if customer.paid_day == index:
                steps.append((self._moment(12, 13), lambda c=customer: self.pay(c)))
            if customer.number % 4 == 1 and days_in == 3:
                steps.append((self._moment(13, 14), lambda c=customer: self.redeem_bonus(c)))
            if customer.number % 6 == 2 and days_in == 5 and self.staff is not None:
                steps.append((self._moment(13, 14), lambda c=customer: self.goodwill_grant(c)))
            if customer is self.cancels and customer.paid_day is not None and index == customer.paid_day + 4:
                steps.append((self._moment(13, 14), lambda c=customer: self.cancel(c)))
            if customer is self.refunded and customer.paid_day is not None and index == customer.paid_day + 2:
                steps.append((self._moment(13, 14), lambda c=customer: self.refund(c)))
            for _ in range(self.chooser.randint(0, 3)):
                steps.append((self._moment(12 if days_in == 0 else 7, 23), lambda c=customer: self.use(c)))
        return steps

    def _moment(self, from_hour: int, to_hour: int) -> time:
        minutes = self.chooser.randint(from_hour * 60, to_hour * 60 - 1)
        return time(minutes // 60, minutes % 60, self.chooser.randint(0, 59))

    # The customers' steps

    def sign_up(self, customer: _Customer) -> None:
        user = account_register(
            email=f"customer{customer.number:02d}@{DEMO_EMAIL_DOMAIN}", password=secrets.token_urlsafe(24)
        )
        if not email_is_verified(user=user):
            email_verify(token=email_verification_token(user=user))
        customer.user = user
        if customer.tier == SubscriptionTier.FREE:
            return
        self.counts["subscriptions"] += 1
        if customer.tier in TRIALS:
            subscription_start(user=user, tier=customer.tier)

    def pay(self, customer: _Customer) -> None:
        """A trial converted, or a tier without a trial bought at sign-up; every third checkout uses
        the WELCOME20 coupon."""
        coupon = "WELCOME20" if customer.number % 3 == 0 else ""
        subscription_start(user=customer.user, tier=customer.tier, coupon_code=coupon)

    def redeem_bonus(self, customer: _Customer) -> None:
        coupon_redeem(user=customer.user, code="BONUS5K", client=ClientInfo(ip=f"203.0.113.{customer.number}"))

    def goodwill_grant(self, customer: _Customer) -> None:
        credit_grant_by_staff(
            user=customer.user, amount=2_000, reason="Demo: goodwill credits after a support ticket", actor=self.staff
        )
        self.counts["grants"] += 1

    def cancel(self, customer: _Customer) -> None:
        subscription = Subscription.objects.get(user=customer.user, status=SubscriptionStatus.ACTIVE)
        subscription_cancel(subscription_id=subscription.pk, user=customer.user, reason="Demo: going with a team plan")

    def refund(self, customer: _Customer) -> None:
        """Staff refund part of the customer's payment after a complaint."""
        payment = PaymentTransaction.objects.filter(user=customer.user, amount_usd__gt=0).order_by("pk").first()
        if payment is None or self.staff is None:
            return
        payment_refund(
            payment_id=payment.pk, amount_usd=Decimal("5.00"), reason="Demo: partial refund", actor=self.staff
        )
        self.counts["refunds"] += 1

    def use(self, customer: _Customer) -> None:
        """One LLM request, if the balance pays for it (the gateway refuses it otherwise)."""
        provider, model = self.chooser.choice(DEMO_MODELS)
        completed = timezone.now()
        event = UsageEvent(
            request_id=uuid.uuid4(),
            user_id=customer.user.pk,
            provider=provider,
            model=model,
            tokens=TokenBreakdown(input=self.chooser.randint(200, 4000), output=self.chooser.randint(100, 2000)),
            request_type="chat",
            request_started_at=completed - timedelta(milliseconds=self.chooser.randint(300, 4000)),
            request_completed_at=completed,
        )
        try:
            usage_record(event=event)
        except PaymentRequired as refused:
            if refused.code != CreditsErrorCode.INSUFFICIENT_CREDITS:
                raise
            return
        self.counts["usage_events"] += 1

    # The nights

    def nightly_jobs(self, *, previous_day: date) -> None:
        """The periodic jobs as beat runs them after midnight. A job item that failed fails the demo
        (it is one transaction): the jobs count such items instead of raising."""
        now = timezone.now()
        self._decline_a_renewal(now)
        outcomes = jobs.monthly_credits_allocate(now=now)
        outcomes.update(dunning_run(now=now))
        if outcomes["failed"]:
            raise RuntimeError(f"A periodic job failed during the demo activity: {dict(outcomes)}")
        jobs.trials_expire(now=now)
        holds_expire(now=now)
        credits_expire(now=now)
        usage_rollup_day(day=previous_day)
        coupon_analytics_snapshot(day=previous_day)

    def _decline_a_renewal(self, now: datetime) -> None:
        """The first enterprise customer's first renewal is declined, as the provider's notice of a
        failed payment records it (the offline provider accepts every charge): the invoice stays
        open, the subscription is past due and the dunning retries are scheduled; the first retry,
        the next night, is paid."""
        customer = self.declines_renewal
        if customer is None or customer.user is None or self.declined is not None:
            return
        due = Subscription.objects.filter(
            user=customer.user, status=SubscriptionStatus.ACTIVE, current_period_end__lte=now
        ).first()
        if due is None:
            return
        with transaction.atomic():
            subscription = subscription_lock(due.pk)
            start = subscription.current_period_end
            invoice_payment_failed(
                subscription=subscription,
                amount_due=usd_to_cents(subscription.base_price_usd),
                period_start=start,
                period_end_at=period_end(start, subscription.billing_cycle),
                reason=DECLINE_REASON,
            )
        self.declined = subscription
        self.counts["declined_payments"] += 1
