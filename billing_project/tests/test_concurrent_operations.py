"""Different operations on the same user, balance, subscription, coupon and campaign at the same
moment, through the API as clients send them, on real PostgreSQL with real threads and the audit
chain sealed as production seals it (a sealer running alongside). No client may see a deadlock or a
serialization failure (they are retried inside), and the ledger and the audit chain verify after."""

import random
import threading
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections
from rest_framework.test import APIClient

from audit.services import audit_chain_seal
from conftest import access_token_for, bearer, role_grant
from coupons.models import CouponRedemption, CouponType, DiscountType, RedemptionStatus
from coupons.tests.factories import CampaignCouponFactory, CouponCampaignFactory, CouponFactory
from credits.models import CreditDeductionLedger
from credits.services import credit_grant, pricing_catalog_seed
from credits.tests.conftest import usage_event
from subscriptions.models import BillingInvoice
from subscriptions.services import tier_catalog_seed
from subscriptions.tests.conftest import (
    MONTH,
    StripeIds,
    customer_register,
    deliver,
    stripe_event,
    subscribe_through_checkout,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("stripe_http"),
]

THREADS = 10
GRANT = "/api/v1/admin/credits/grant/"
USAGE = "/api/v1/usage/record/"
COUPONS = "/api/v1/admin/coupons/"
REDEEM = "/api/v1/coupons/redeem/"


class World:
    """One Stripe-billed Pro subscriber with credits and past usage, a campaign with a credits coupon,
    other customers to redeem it, staff and a usage gateway."""

    def __init__(self, django_user_model, service_token):
        tier_catalog_seed()
        pricing_catalog_seed()
        self.ids = StripeIds.new()
        self.subscription = subscribe_through_checkout(APIClient(), customer_register("racer@example.com"), self.ids)
        self.user = self.subscription.user
        credit_grant(user=self.user, amount=1_000_000, source="bonus", reason="race funds")
        staff = django_user_model.objects.create_user(
            username="staff@example.com", email="staff@example.com", password="x", is_staff=True
        )
        self.staff_token = access_token_for(role_grant(staff, "admin"))
        self.service_token = service_token("usage:write")
        for _ in range(8):
            recorded = self._client(self.service_token).post(USAGE, usage_event(self.user), format="json")
            assert recorded.status_code == 201
        self.deductions = list(CreditDeductionLedger.objects.filter(user=self.user).values_list("pk", flat=True))
        self.campaign = CouponCampaignFactory(budget_usd=Decimal("100000.00"))
        self.coupon = CouponFactory(
            code="RACE-CREDITS",
            coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
            discount_type=DiscountType.CREDITS,
            discount_value=Decimal(100),
            max_uses=1000,
        )
        CampaignCouponFactory(campaign=self.campaign, coupon=self.coupon)
        self.customers = [self.user] + [customer_register(f"redeemer{n}@example.com") for n in range(9)]
        self.next_period_start = self.subscription.current_period_end

    @staticmethod
    def _client(token: str) -> APIClient:
        client = APIClient()
        client.credentials(**bearer(token))
        return client

    def operations(self, counts: dict[str, int]) -> list:
        made = []
        for kind, count in counts.items():
            for n in range(count):
                made.append((kind, getattr(self, kind)(n)))
        random.Random(16).shuffle(made)
        return made

    def renewal(self, n):
        start = self.next_period_start + n * MONTH
        event = stripe_event(
            "invoice.paid", self.ids.next_invoice(), period=(start, start + MONTH), billing_reason="subscription_cycle"
        )
        return lambda: deliver(APIClient(), event)

    def grant(self, n):
        body = {"user_id": self.user.pk, "amount": 100 + n, "reason": f"goodwill {n}"}
        return lambda: self._client(self.staff_token).post(GRANT, body, format="json")

    def usage(self, n):
        return lambda: self._client(self.service_token).post(USAGE, usage_event(self.user), format="json")

    def reversal(self, n):
        url = f"/api/v1/admin/credits/deductions/{self.deductions[n]}/reverse/"
        return lambda: self._client(self.staff_token).post(url, {"reason": f"bad answer {n}"}, format="json")

    def coupon_create(self, n):
        body = {
            "code": f"race-new-{n}",
            "coupon_type": "percentage_discount",
            "discount_type": "percentage",
            "discount_value": "10.00",
            "campaign_id": str(self.campaign.pk),
        }
        return lambda: self._client(self.staff_token).post(COUPONS, body, format="json")

    def redemption(self, n):
        customer = self.customers[n]
        return lambda: self._client(access_token_for(customer)).post(
            REDEEM, {"code": self.coupon.code}, format="json", REMOTE_ADDR=f"198.51.100.{n + 1}"
        )

    def seal(self, n):
        return audit_chain_seal


def run_from_threads(operations: list) -> list:
    """The operations from THREADS threads released together, each taking the next one in turn."""
    barrier = threading.Barrier(THREADS)
    lock = threading.Lock()
    pending = list(operations)
    results = []

    def worker():
        try:
            barrier.wait()
            while True:
                with lock:
                    if not pending:
                        return
                    kind, operation = pending.pop()
                try:
                    outcome = operation()
                except Exception as error:  # reported to the test, which asserts on it
                    outcome = error
                with lock:
                    results.append((kind, outcome))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def check_command(name: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command(name, "--no-progress", stdout=out, stderr=out)
    except SystemExit as exit_:
        return exit_.code, out.getvalue()
    return 0, out.getvalue()


SUCCESS = {
    "renewal": {200},
    "grant": {201},
    "usage": {201},
    "reversal": {200},
    "coupon_create": {201},
    "redemption": {201},
}

MIXES = {
    "renewals, grants, usage and reversals of one user": {"renewal": 4, "grant": 6, "usage": 8, "reversal": 6},
    "coupon creation in a campaign and its redemptions": {"coupon_create": 8, "redemption": 10, "seal": 2},
    "fifty mixed operations": {
        "renewal": 5,
        "grant": 8,
        "usage": 10,
        "reversal": 8,
        "coupon_create": 6,
        "redemption": 9,
        "seal": 4,
    },
}


@pytest.mark.parametrize("mix", MIXES.values(), ids=MIXES.keys())
def test_concurrent_operations_reach_no_client_as_a_conflict_and_leave_ledger_and_chain_whole(
    django_user_model, service_token, settings, mix
):
    settings.AUDIT_SEAL_ON_WRITE = False
    world = World(django_user_model, service_token)
    operations = world.operations(mix)

    results = run_from_threads(operations)

    assert len(results) == sum(mix.values())
    failures = [
        (kind, outcome if isinstance(outcome, Exception) else (outcome.status_code, outcome.content[:300]))
        for kind, outcome in results
        if isinstance(outcome, Exception) or (kind != "seal" and outcome.status_code not in SUCCESS[kind])
    ]
    assert failures == []
    renewals = mix.get("renewal", 0)
    assert BillingInvoice.objects.filter(subscription=world.subscription, status="paid").count() == 1 + renewals
    assert CouponRedemption.objects.filter(coupon=world.coupon, status=RedemptionStatus.SUCCESS).count() == mix.get(
        "redemption", 0
    )
    assert world.campaign.coupon_links.count() == 1 + mix.get("coupon_create", 0)
    code, report = check_command("verify_ledger")
    assert code == 0, report
    code, report = check_command("verify_audit_chain")
    assert code == 0, report
    assert "intact" in report
