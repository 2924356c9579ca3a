"""Demo activity for a development or demo database: customers across the tiers, trials and paid
subscriptions through the offline payment provider, coupon redemptions, staff grants, a refund, and
LLM usage, all through the apps' services so the ledgers stay consistent. Like the dashboard it sits on
top of every app.

The ledgers are append-only and stamped with the time they are written, so the activity is recorded
today; the usage events carry request times spread over the past weeks."""

import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from billing_project.email_verification import email_is_verified, email_verification_token, email_verify
from billing_project.enums import SubscriptionTier
from billing_project.errors import PaymentRequired
from billing_project.net import ClientInfo
from coupons.models import CouponRedemption, RedemptionStatus
from coupons.services.analytics import coupon_analytics_snapshot
from coupons.services.campaigns import demo_coupons_seed
from coupons.services.redemption import coupon_redeem
from credits.codes import ErrorCode as CreditsErrorCode
from credits.services import pricing_catalog_seed
from credits.services.grants import credit_grant_by_staff
from credits.services.ledger import days_between, usage_rollup_day
from credits.services.usage import UsageEvent, usage_record
from credits.usage_objects import TokenBreakdown
from payments.models import WebhookProvider
from payments.services.operations import active_provider
from subscriptions.models import PaymentTransaction
from subscriptions.services import account_register, tier_catalog_seed
from subscriptions.services.billing import payment_refund
from subscriptions.services.lifecycle import subscription_start

DEMO_EMAIL_DOMAIN = "demo.example.com"
DEMO_DAYS = 21
# (tier, customers, converted from the trial to a paid subscription)
DEMO_MIX = (
    (SubscriptionTier.FREE, 8, False),
    (SubscriptionTier.PRO, 4, False),
    (SubscriptionTier.PRO, 8, True),
    (SubscriptionTier.PRO_MAX, 5, True),
    (SubscriptionTier.ENTERPRISE_PRO, 3, True),
    (SubscriptionTier.ENTERPRISE_MAX, 2, True),
)
DEMO_MODELS = (("openai", "gpt-4o"), ("openai", "gpt-4-turbo"), ("anthropic", "claude-3-5-sonnet"))


class DemoRefused(Exception):
    """The demo activity would charge a real payment provider."""


@dataclass(frozen=True)
class DemoActivity:
    customers: int
    subscriptions: int
    usage_events: int
    redemptions: int
    grants: int
    refunds: int


def demo_customers():
    return get_user_model().objects.filter(email__endswith=f"@{DEMO_EMAIL_DOMAIN}")


@transaction.atomic
def demo_activity_seed(*, seed: int = 18) -> DemoActivity | None:
    """Creates the demo activity, or nothing (None) when its customers exist already. All of it or
    none: a run that fails leaves no demo customers, so the next run starts again. Safe in one
    transaction because the offline provider calls no network service."""
    if active_provider() != WebhookProvider.OFFLINE:
        raise DemoRefused("The demo activity needs the offline payment provider (PAYMENTS_PROVIDER=offline).")
    if demo_customers().exists():
        return None
    tier_catalog_seed()
    pricing_catalog_seed()
    demo_coupons_seed()
    first_day = timezone.localdate()
    chooser = random.Random(seed)
    staff = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    counts = dict.fromkeys(("subscriptions", "usage_events", "grants", "refunds"), 0)
    customers = []
    for tier, how_many, converted in DEMO_MIX:
        for _ in range(how_many):
            user = _customer(len(customers) + 1)
            customers.append(user)
            counts["subscriptions"] += _subscribe(user, tier=tier, converted=converted, index=len(customers))
    for index, user in enumerate(customers):
        if index % 4 == 0:
            coupon_redeem(user=user, code="BONUS5K", client=ClientInfo(ip=f"203.0.113.{index + 1}"))
        if index % 6 == 1:
            credit_grant_by_staff(
                user=user, amount=2_000, reason="Demo: goodwill credits after a support ticket", actor=staff
            )
            counts["grants"] += 1
        counts["usage_events"] += _use(user, chooser=chooser)
    counts["refunds"] += _refund_one(staff=staff)
    for day in days_between(first_day, timezone.localdate()):  # the days the run spans (midnight may pass)
        usage_rollup_day(day=day)
        coupon_analytics_snapshot(day=day)
    redemptions = CouponRedemption.objects.filter(user__in=customers, status=RedemptionStatus.SUCCESS).count()
    return DemoActivity(customers=len(customers), redemptions=redemptions, **counts)


def _customer(number: int):
    user = account_register(email=f"customer{number:02d}@{DEMO_EMAIL_DOMAIN}", password=secrets.token_urlsafe(24))
    if not email_is_verified(user=user):
        email_verify(token=email_verification_token(user=user))
    return user


def _subscribe(user, *, tier: str, converted: bool, index: int) -> int:
    """Starts the tier (a trial where it has one) and, when converted, pays its checkout; every third
    paid checkout uses the WELCOME20 coupon."""
    if tier == SubscriptionTier.FREE:
        return 0
    started = subscription_start(user=user, tier=tier)
    if converted and started.subscription is not None and started.checkout is None:
        coupon = "WELCOME20" if index % 3 == 0 else ""
        subscription_start(user=user, tier=tier, coupon_code=coupon)
    return 1


def _use(user, *, chooser: random.Random) -> int:
    """A few requests a day over the past weeks, as many as the balance pays for."""
    now = timezone.now()
    recorded = 0
    for days_ago in range(DEMO_DAYS, 0, -1):
        for _ in range(chooser.randint(0, 3)):
            provider, model = chooser.choice(DEMO_MODELS)
            started = now - timedelta(days=days_ago, minutes=chooser.randint(0, 600))
            event = UsageEvent(
                request_id=uuid.uuid4(),
                user_id=user.pk,
                provider=provider,
                model=model,
                tokens=TokenBreakdown(input=chooser.randint(200, 4000), output=chooser.randint(100, 2000)),
                request_type="chat",
                request_started_at=started,
                request_completed_at=started + timedelta(milliseconds=chooser.randint(300, 4000)),
            )
            try:
                usage_record(event=event)
            except PaymentRequired as refused:  # out of credits: the gateway stops this customer here too
                if refused.code != CreditsErrorCode.INSUFFICIENT_CREDITS:
                    raise
                return recorded
            recorded += 1
    return recorded


def _refund_one(*, staff) -> int:
    """Staff refund part of one demo payment, as support does after a complaint (refunds are made by
    a staff member: none exists before the first admin is created)."""
    if staff is None:
        return 0
    payment = (
        PaymentTransaction.objects.filter(user__email__endswith=f"@{DEMO_EMAIL_DOMAIN}", amount_usd__gt=0)
        .order_by("pk")
        .first()
    )
    if payment is None:
        return 0
    payment_refund(payment_id=payment.pk, amount_usd=Decimal("5.00"), reason="Demo: partial refund", actor=staff)
    return 1
