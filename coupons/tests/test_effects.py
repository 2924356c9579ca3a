"""Each coupon effect end to end, through `coupons/redeem/` and `subscriptions/`: what the customer
gets (credits, a renewal discount, free months, a license, a cheaper first invoice), what the
database keeps, and what the payment provider is told."""

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from conftest import access_token_for, bearer
from coupons.codes import Reason
from coupons.models import CouponRedemption, CouponType, CouponUsageLimit, DiscountType, RedemptionStatus
from coupons.services.campaigns import coupon_delete
from coupons.tasks import release_abandoned_checkouts
from coupons.tests.conftest import PASSWORD, REDEEM_URL
from coupons.tests.factories import CampaignCouponFactory, CouponCampaignFactory, CouponFactory
from credits.models import CreditAllocation, CreditSource, UserCreditBalance, UserCreditSource
from licensing.models import LicenseStatus, PerpetualLicense
from payments.models import PaymentOperation
from payments.services.reconcile import payments_reconcile
from subscriptions.jobs import monthly_credits_allocate
from subscriptions.models import (
    BillingInvoice,
    InvoiceStatus,
    PaymentStatus,
    PaymentTransaction,
    Subscription,
    SubscriptionStatus,
    UserEntitlement,
)
from subscriptions.periods import add_months
from subscriptions.services import account_register, subscription_period_roll_over, subscription_start, trial_expire
from subscriptions.tests.conftest import StripeIds, deliver, stripe_event, subscribe_through_checkout

pytestmark = pytest.mark.django_db

START_URL = "/api/v1/subscriptions/"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code"}


# Helpers


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body.keys() >= PROBLEM_FIELDS
    assert (body["status"], body["code"]) == (status, code)
    return body


def redeem(client, code: str, **fields):
    return client.post(REDEEM_URL, {"code": code, **fields}, format="json")


def start(client, tier: str, *, billing_cycle: str = "monthly", coupon_code: str = ""):
    return client.post(
        START_URL, {"tier": tier, "billing_cycle": billing_cycle, "coupon_code": coupon_code}, format="json"
    )


def client_of(user) -> APIClient:
    client = APIClient()
    client.credentials(**bearer(access_token_for(user)))
    return client


def balance_of(user) -> int:
    return UserCreditBalance.objects.get(user=user).amount


def stripe_calls(stripe_http, since: int = 0) -> list[tuple[str, str]]:
    return [(method.lower(), path) for method, path in stripe_http.calls()[since:]]


def session_metadata(form: dict) -> dict:
    return {key[len("metadata[") : -1]: value for key, value in form.items() if key.startswith("metadata[")}


def paid_pro(user) -> Subscription:
    """An active Pro subscription billed offline (19.00 a month): the user's trial, then its paid
    conversion, as the API does them."""
    subscription_start(user=user, tier="pro")
    converted = subscription_start(user=user, tier="pro").subscription
    converted.refresh_from_db()
    assert (converted.status, converted.stripe_subscription_id) == (SubscriptionStatus.ACTIVE, None)
    return converted


def credits_coupon(credits: int, **fields):
    return CouponFactory(
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.CREDITS,
        discount_value=Decimal(credits),
        **fields,
    )


def months_free_coupon(months: int, **fields):
    return CouponFactory(
        coupon_type=CouponType.DURATION_BONUS,
        discount_type=DiscountType.MONTHS_FREE,
        discount_value=Decimal(months),
        **fields,
    )


def total_uses(coupon) -> int:
    return CouponUsageLimit.objects.filter(coupon=coupon).values_list("total_uses", flat=True).first() or 0


# Credits


def test_a_credits_coupon_grants_exactly_its_credits_from_the_coupon_source(customer, customer_client):
    coupon = credits_coupon(5_000)

    response = redeem(customer_client, coupon.code.lower())

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["credits_granted"], body["months_granted"]) == ("success", 5_000, 0)
    assert (body["license_key"], body["subscription_id"]) == (None, None)
    assert balance_of(customer) == 2_000 + 5_000
    allocation = CreditAllocation.objects.get(user=customer, source=CreditSource.COUPON)
    assert (allocation.amount, allocation.subscription_id, allocation.expires_at) == (5_000, None, None)
    grant = UserCreditSource.objects.get(allocation=allocation)
    assert (grant.user, grant.source, grant.original_amount, grant.remaining) == (
        customer,
        CreditSource.COUPON,
        5_000,
        5_000,
    )
    redemption = CouponRedemption.objects.get(pk=body["redemption_id"])
    assert (redemption.status, redemption.coupon, redemption.user, redemption.credit_allocation) == (
        RedemptionStatus.SUCCESS,
        coupon,
        customer,
        allocation,
    )
    assert (redemption.use_number, redemption.user_use_number, redemption.credits_granted) == (1, 1, 5_000)
    assert total_uses(coupon) == 1


# Price discounts redeemed on their own: the next renewal


@pytest.mark.parametrize(("percent", "discount"), [("20.00", "3.80"), ("15.50", "2.95")])
def test_a_percentage_coupon_takes_its_discount_off_the_next_renewal_once(customer, customer_client, percent, discount):
    # given an active Pro subscription at 19.00, billed offline
    subscription = paid_pro(customer)
    coupon = CouponFactory(discount_value=Decimal(percent))
    discount = Decimal(discount)  # 15.5% of 19.00 is 2.945: half-up to 2.95

    # when the customer redeems the coupon on its own
    response = redeem(customer_client, coupon.code)

    # then the discount waits for the next renewal
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["original_amount_usd"], body["discount_applied_usd"], body["final_amount_usd"]) == (
        "19.00",
        str(discount),
        str(Decimal("19.00") - discount),
    )
    assert body["subscription_id"] == str(subscription.pk)
    subscription.refresh_from_db()
    assert subscription.renewal_discount_usd == discount
    redemption = CouponRedemption.objects.get(pk=body["redemption_id"])
    assert (redemption.status, redemption.subscription, redemption.discount_applied_usd) == (
        RedemptionStatus.SUCCESS,
        subscription,
        discount,
    )

    # when the period ends, the renewal charges the price less the discount, and only that renewal
    first_end = subscription.current_period_end
    assert subscription_period_roll_over(subscription_id=subscription.pk, now=first_end + timedelta(minutes=1)) == (
        "renewed"
    )
    invoice = BillingInvoice.objects.get(subscription=subscription, period_start=first_end)
    assert (invoice.subtotal_usd, invoice.discount_usd, invoice.amount_due_usd) == (
        Decimal("19.00"),
        discount,
        Decimal("19.00") - discount,
    )
    assert (invoice.status, invoice.amount_paid_usd) == (InvoiceStatus.PAID, Decimal("19.00") - discount)
    payment = PaymentTransaction.objects.get(invoice=invoice)
    assert (payment.status, payment.amount_usd) == (PaymentStatus.SUCCEEDED, Decimal("19.00") - discount)
    subscription.refresh_from_db()
    assert (subscription.current_period_start, subscription.renewal_discount_usd) == (first_end, Decimal("0.00"))

    second_end = subscription.current_period_end
    subscription_period_roll_over(subscription_id=subscription.pk, now=second_end + timedelta(minutes=1))
    next_invoice = BillingInvoice.objects.get(subscription=subscription, period_start=second_end)
    assert (next_invoice.subtotal_usd, next_invoice.discount_usd, next_invoice.amount_due_usd) == (
        Decimal("19.00"),
        Decimal("0.00"),
        Decimal("19.00"),
    )


def test_a_fixed_discount_larger_than_the_price_takes_the_renewal_to_zero_and_never_below(customer, customer_client):
    subscription = paid_pro(customer)
    coupon = CouponFactory(
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.FIXED_AMOUNT,
        discount_value=Decimal("25.00"),
    )

    response = redeem(customer_client, coupon.code)

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["original_amount_usd"], body["discount_applied_usd"], body["final_amount_usd"]) == (
        "19.00",
        "19.00",
        "0.00",
    )
    subscription.refresh_from_db()
    assert subscription.renewal_discount_usd == Decimal("19.00")

    # when the daily allocation job runs after the period end
    first_end = subscription.current_period_end
    outcomes = monthly_credits_allocate(now=first_end + timedelta(minutes=1))

    # then the renewal is invoiced at zero, with the whole price as its discount
    assert outcomes["renewed"] == 1
    invoice = BillingInvoice.objects.get(subscription=subscription, period_start=first_end)
    assert (invoice.subtotal_usd, invoice.discount_usd, invoice.amount_due_usd, invoice.status) == (
        Decimal("19.00"),
        Decimal("19.00"),
        Decimal("0.00"),
        InvoiceStatus.PAID,
    )
    subscription.refresh_from_db()
    assert (subscription.status, subscription.renewal_discount_usd) == (SubscriptionStatus.ACTIVE, Decimal("0.00"))


def test_with_stripe_a_renewal_discount_goes_on_the_next_stripe_invoice_as_a_once_coupon(
    customer, customer_client, stripe_http, django_capture_on_commit_callbacks
):
    # given a Pro subscription that Stripe bills
    ids = StripeIds.new()
    subscription = subscribe_through_checkout(APIClient(), customer, ids)
    coupon = CouponFactory(discount_value=Decimal("20.00"))
    sent = len(stripe_http.requests)

    with django_capture_on_commit_callbacks(execute=True):
        response = redeem(customer_client, coupon.code)

    # then Stripe gets a coupon of 3.80 off one invoice, put on the subscription (once it committed)
    assert response.status_code == 201, response.content
    assert stripe_calls(stripe_http, sent) == [("post", "coupons"), ("post", f"subscriptions/{ids.subscription}")]
    coupon_form = stripe_http.requests[sent]["form"]
    assert (coupon_form["amount_off"], coupon_form["currency"], coupon_form["duration"]) == ("380", "usd", "once")
    (stripe_coupon,) = stripe_http.objects_of("coupon")
    assert stripe_http.requests[sent + 1]["form"]["discounts[0][coupon]"] == stripe_coupon["id"]
    subscription.refresh_from_db()
    assert subscription.renewal_discount_usd == Decimal("3.80")
    assert response.json()["subscription_id"] == str(subscription.pk)


def test_when_stripe_fails_the_renewal_discount_stands_and_reaches_stripe_at_the_next_reconcile(
    customer, customer_client, stripe_http, django_capture_on_commit_callbacks
):
    ids = StripeIds.new()
    subscription = subscribe_through_checkout(APIClient(), customer, ids)
    coupon = CouponFactory(discount_value=Decimal("20.00"))
    stripe_http.inject("POST", "coupons", "unavailable")

    with django_capture_on_commit_callbacks(execute=True):
        response = redeem(customer_client, coupon.code)

    # the redemption is ours to decide and stands; Stripe's copy is an operation left to finish
    assert response.status_code == 201, response.content
    subscription.refresh_from_db()
    assert subscription.renewal_discount_usd == Decimal("3.80")
    assert total_uses(coupon) == 1
    sync = PaymentOperation.objects.get(kind="subscription_sync")
    assert (sync.state, sync.params["action"]) == ("pending", "discount_once")
    assert "did not answer" in sync.last_error

    # reconcile (the beat job) finishes it once Stripe answers again
    with time_machine.travel(timezone.now() + timedelta(minutes=20)):
        assert payments_reconcile() == {"succeeded": 1}
    sync.refresh_from_db()
    assert sync.state == "succeeded"
    (stripe_coupon,) = stripe_http.objects_of("coupon")
    assert stripe_http.object(ids.subscription)["discounts"] == [stripe_coupon["id"]]


def test_a_discount_coupon_for_a_user_on_the_free_tier_is_refused_and_the_attempt_recorded(customer, customer_client):
    coupon = CouponFactory(discount_value=Decimal("20.00"))

    response = redeem(customer_client, coupon.code)

    assert_problem(response, 422, Reason.NO_SUBSCRIPTION_TO_DISCOUNT)
    failed = CouponRedemption.objects.get(coupon=coupon)
    assert (failed.status, failed.failure_reason, failed.user, failed.use_number) == (
        RedemptionStatus.FAILED,
        Reason.NO_SUBSCRIPTION_TO_DISCOUNT,
        customer,
        None,
    )
    assert total_uses(coupon) == 0
    free = Subscription.objects.get(user=customer)
    assert (free.tier, free.renewal_discount_usd) == ("free", Decimal("0.00"))


# Free months


def test_free_months_move_an_active_subscriptions_period_end_later(customer, customer_client):
    subscription = paid_pro(customer)
    period_end_before, trial_end_before = subscription.current_period_end, subscription.trial_ends_at
    coupon = months_free_coupon(2)

    response = redeem(customer_client, coupon.code)

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["months_granted"], body["subscription_id"]) == (2, str(subscription.pk))
    subscription.refresh_from_db()
    assert subscription.current_period_end == add_months(period_end_before, 2)
    # the converted trial's end stays where it was: only a trial's end follows its period
    assert (subscription.status, subscription.trial_ends_at) == (SubscriptionStatus.ACTIVE, trial_end_before)
    redemption = CouponRedemption.objects.get(pk=body["redemption_id"])
    assert (redemption.status, redemption.subscription, redemption.months_granted) == (
        RedemptionStatus.SUCCESS,
        subscription,
        2,
    )


def test_free_months_move_a_trials_end_later(customer, customer_client):
    trial = subscription_start(user=customer, tier="pro").subscription
    trial_end_before = trial.trial_ends_at
    coupon = months_free_coupon(1)

    response = redeem(customer_client, coupon.code)

    assert response.status_code == 201, response.content
    trial.refresh_from_db()
    assert trial.status == SubscriptionStatus.TRIAL
    assert trial.trial_ends_at == trial.current_period_end == add_months(trial_end_before, 1)
    assert UserEntitlement.objects.get(user=customer).expires_at == trial.trial_ends_at


def test_the_monthly_job_allocates_the_extra_months_credits_once_inside_the_extension(customer, customer_client):
    # given a paid month extended by one free month
    subscription = paid_pro(customer)
    start_at, paid_end = subscription.current_period_start, subscription.current_period_end
    assert redeem(customer_client, months_free_coupon(1).code).status_code == 201
    subscription.refresh_from_db()
    extended_end = subscription.current_period_end
    balance_before = balance_of(customer)

    # when the allocation job runs twice inside the free month
    first = monthly_credits_allocate(now=paid_end + timedelta(days=1))
    second = monthly_credits_allocate(now=paid_end + timedelta(days=2))

    # then the free month's credits are allocated once, and nothing is charged
    assert (first["allocated"], second["allocated"]) == (1, 0)
    assert first["renewed"] == second["renewed"] == 0
    allocations = CreditAllocation.objects.filter(
        subscription_id=subscription.pk, source=CreditSource.SUBSCRIPTION, period_start__gte=start_at
    ).order_by("period_start")
    assert [(row.period_start, row.period_end, row.amount) for row in allocations] == [
        (start_at, paid_end, 20_000),
        (paid_end, min(add_months(start_at, 2), extended_end), 20_000),
    ]
    assert balance_of(customer) == balance_before + 20_000
    assert not BillingInvoice.objects.filter(subscription=subscription, period_start__gte=paid_end).exists()


# A license


def test_a_byok_migration_coupon_grants_an_active_free_perpetual_license(customer, customer_client):
    coupon = CouponFactory(coupon_type=CouponType.BYOK_MIGRATION, discount_type="", discount_value=Decimal("0"))

    response = redeem(customer_client, coupon.code)

    assert response.status_code == 201, response.content
    body = response.json()
    license_ = PerpetualLicense.objects.get(user=customer)
    assert (license_.status, license_.eligible_until_version, license_.byok_enabled) == (
        LicenseStatus.ACTIVE,
        "999.0.0",
        True,
    )
    assert (license_.purchase_price_usd, license_.acquisition_coupon_code) == (Decimal("0.00"), coupon.code)
    assert license_.activated_at is not None
    assert body["license_key"] == license_.license_key
    assert body["final_amount_usd"] == "0.00"
    redemption = CouponRedemption.objects.get(pk=body["redemption_id"])
    assert (redemption.status, redemption.license_granted) == (RedemptionStatus.SUCCESS, license_)
    assert redemption.license_granted_at is not None


# A coupon at subscription start


@pytest.mark.parametrize(
    ("tier", "billing_cycle", "trial_used", "price", "discount", "due"),
    [
        ("enterprise_pro", "monthly", False, "149.00", "29.80", "119.20"),  # a tier without trial days
        ("pro", "annual", True, "190.00", "38.00", "152.00"),  # the user's trial is spent
    ],
)
def test_a_coupon_at_an_offline_start_takes_its_discount_off_the_first_invoice(
    customer, customer_client, tier, billing_cycle, trial_used, price, discount, due
):
    if trial_used:
        trial = subscription_start(user=customer, tier=tier).subscription
        trial_expire(subscription_id=trial.pk, now=trial.trial_ends_at)
    coupon = CouponFactory(discount_value=Decimal("20.00"))

    response = start(customer_client, tier, billing_cycle=billing_cycle, coupon_code=coupon.code)

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["subscription"]["status"], body["checkout"]["completed"]) == ("active", True)
    subscription = Subscription.objects.get(pk=body["subscription"]["id"])
    assert (subscription.tier, subscription.billing_cycle, subscription.base_price_usd) == (
        tier,
        billing_cycle,
        Decimal(price),
    )
    invoice = BillingInvoice.objects.get(subscription=subscription)
    assert (invoice.subtotal_usd, invoice.discount_usd, invoice.amount_due_usd, invoice.amount_paid_usd) == (
        Decimal(price),
        Decimal(discount),
        Decimal(due),
        Decimal(due),
    )
    assert PaymentTransaction.objects.get(invoice=invoice).amount_usd == Decimal(due)
    redemption = CouponRedemption.objects.get(coupon=coupon)
    assert (redemption.status, redemption.subscription, redemption.user, redemption.use_number) == (
        RedemptionStatus.SUCCESS,
        subscription,
        customer,
        1,
    )
    assert (redemption.original_amount_usd, redemption.discount_applied_usd, redemption.final_amount_usd) == (
        Decimal(price),
        Decimal(discount),
        Decimal(due),
    )
    assert total_uses(coupon) == 1


def test_with_stripe_a_coupon_at_start_is_held_pending_until_the_checkout_is_paid(
    customer, customer_client, stripe_http
):
    coupon = CouponFactory(discount_value=Decimal("20.00"))

    # when the customer starts Enterprise Pro (149.00) with a 20% coupon
    response = start(customer_client, "enterprise_pro", coupon_code=coupon.code)

    # then the checkout carries a Stripe coupon of 29.80 and the redemption is pending
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["subscription"], body["checkout"]["completed"]) == (None, False)
    assert stripe_calls(stripe_http) == [("post", "customers"), ("post", "coupons"), ("post", "checkout/sessions")]
    _, coupon_form, session_form = (call["form"] for call in stripe_http.requests)
    assert (coupon_form["amount_off"], coupon_form["duration"]) == ("2980", "once")
    (stripe_coupon,) = stripe_http.objects_of("coupon")
    assert session_form["discounts[0][coupon]"] == stripe_coupon["id"]
    assert session_form["line_items[0][price_data][unit_amount]"] == "14900"
    redemption = CouponRedemption.objects.get(coupon=coupon)
    assert (redemption.status, redemption.subscription, redemption.use_number) == (RedemptionStatus.PENDING, None, 1)
    assert redemption.discount_applied_usd == Decimal("29.80")
    metadata = session_metadata(session_form)
    assert (metadata["coupon_redemption_id"], metadata["coupon_code"]) == (str(redemption.pk), coupon.code)
    assert total_uses(coupon) == 0

    # when Stripe reports the checkout paid (twice: webhooks are redelivered)
    ids = replace(StripeIds.new(), session=body["checkout"]["session_id"])
    event = stripe_event(
        "checkout.session.completed",
        ids,
        client_reference_id=str(customer.pk),
        metadata=metadata,
        amount_subtotal=14_900,
        amount_total=11_920,
        customer_email=customer.email,
    )
    event["data"]["object"]["total_details"]["amount_discount"] = 2_980
    assert deliver(APIClient(), event).status_code == 200
    assert deliver(APIClient(), event).status_code == 200

    # then the redemption succeeds, linked to the subscription, and the invoice shows the discount
    subscription = Subscription.objects.get(stripe_subscription_id=ids.subscription)
    assert (subscription.tier, subscription.status) == ("enterprise_pro", SubscriptionStatus.ACTIVE)
    redemption.refresh_from_db()
    assert (redemption.status, redemption.subscription) == (RedemptionStatus.SUCCESS, subscription)
    invoice = BillingInvoice.objects.get(subscription=subscription)
    assert (invoice.subtotal_usd, invoice.discount_usd, invoice.amount_due_usd) == (
        Decimal("149.00"),
        Decimal("29.80"),
        Decimal("119.20"),
    )
    assert total_uses(coupon) == 1


def test_a_coupon_at_a_checkout_paid_in_euros_is_redeemed_in_euros(customer, customer_client, stripe_http):
    coupon = CouponFactory(discount_value=Decimal("20.00"))
    body = start(customer_client, "enterprise_pro", coupon_code=coupon.code).json()
    _, _, session_form = (call["form"] for call in stripe_http.requests)

    event = stripe_event(
        "checkout.session.completed",
        replace(StripeIds.new(), session=body["checkout"]["session_id"]),
        client_reference_id=str(customer.pk),
        metadata=session_metadata(session_form),
        amount_subtotal=14_900,
        amount_total=11_920,
        currency="eur",
        customer_email=customer.email,
    )
    assert deliver(APIClient(), event).status_code == 200

    redemption = CouponRedemption.objects.get(coupon=coupon)
    assert (redemption.status, redemption.currency, redemption.discount_applied_usd) == (
        RedemptionStatus.SUCCESS,
        "eur",
        Decimal("29.80"),
    )
    assert BillingInvoice.objects.get(subscription=redemption.subscription).currency == "eur"


def _refused_coupon(kind: str):
    now = timezone.now()
    if kind == "expired":
        return CouponFactory(valid_from=now - timedelta(days=10), valid_until=now - timedelta(days=1))
    if kind == "other_tier":
        return CouponFactory(coupon_type=CouponType.TIER_SPECIFIC_DISCOUNT, applicable_tiers=["pro"])
    return credits_coupon(1_000)


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("expired", Reason.COUPON_EXPIRED),
        ("other_tier", Reason.TIER_NOT_ELIGIBLE),
        ("credits", Reason.NOT_A_CHECKOUT_DISCOUNT),
    ],
)
def test_a_refused_coupon_refuses_the_start_with_its_reason_and_writes_nothing(customer, customer_client, kind, code):
    free = Subscription.objects.get(user=customer)
    coupon = _refused_coupon(kind)

    response = start(customer_client, "enterprise_pro", coupon_code=coupon.code)

    assert_problem(response, 422, code)
    assert list(Subscription.objects.filter(user=customer)) == [free]
    free.refresh_from_db()
    assert free.status == SubscriptionStatus.ACTIVE
    assert not CouponRedemption.objects.exists()
    assert not BillingInvoice.objects.exists()
    assert balance_of(customer) == 2_000


def test_an_unknown_coupon_code_refuses_the_start(customer, customer_client):
    response = start(customer_client, "enterprise_pro", coupon_code="NO-SUCH-CODE")

    assert_problem(response, 422, Reason.COUPON_NOT_FOUND)
    assert list(Subscription.objects.filter(user=customer).values_list("tier", flat=True)) == ["free"]
    assert not CouponRedemption.objects.exists()


def test_a_coupon_at_a_start_that_would_be_a_trial_is_refused(customer, customer_client):
    coupon = CouponFactory(discount_value=Decimal("20.00"))

    response = start(customer_client, "pro", coupon_code=coupon.code)

    assert_problem(response, 422, "coupon_not_for_trial")
    assert list(Subscription.objects.filter(user=customer).values_list("tier", "status")) == [("free", "active")]
    assert not CouponRedemption.objects.exists()


# Checkouts never paid


def test_an_abandoned_checkout_gives_its_coupon_use_and_campaign_budget_back(
    customer, customer_client, stripe_http, settings
):
    # given a single-use coupon of a campaign, held by a Stripe checkout that is never paid
    campaign = CouponCampaignFactory(budget_usd=Decimal("100.00"))
    coupon = CouponFactory(discount_value=Decimal("20.00"), max_uses=1)
    CampaignCouponFactory(campaign=campaign, coupon=coupon)
    assert start(customer_client, "enterprise_pro", coupon_code=coupon.code).status_code == 201
    held = CouponRedemption.objects.get(coupon=coupon, user=customer)
    assert held.status == RedemptionStatus.PENDING
    campaign.refresh_from_db()
    assert campaign.spent_usd == Decimal("29.80")
    other = account_register(email="second@example.com", password=PASSWORD)
    other_client = client_of(other)
    assert_problem(start(other_client, "enterprise_pro", coupon_code=coupon.code), 422, Reason.MAX_USES_REACHED)

    # when the release job runs before, then after, the hold ends
    assert release_abandoned_checkouts() == 0
    with time_machine.travel(timezone.now() + settings.COUPON_CHECKOUT_HOLD + timedelta(minutes=1)):
        released = release_abandoned_checkouts()
        released_again = release_abandoned_checkouts()

    # then the held use and the budget are given back, once
    assert (released, released_again) == (1, 0)
    held.refresh_from_db()
    assert (held.status, held.failure_reason) == (RedemptionStatus.FAILED, Reason.CHECKOUT_ABANDONED)
    campaign.refresh_from_db()
    assert campaign.spent_usd == Decimal("0.00")
    assert total_uses(coupon) == 0

    # and another customer can now use the coupon
    assert start(other_client, "enterprise_pro", coupon_code=coupon.code).status_code == 201
    taken = CouponRedemption.objects.get(coupon=coupon, user=other, status=RedemptionStatus.PENDING)
    assert taken.use_number == 1
    campaign.refresh_from_db()
    assert campaign.spent_usd == Decimal("29.80")


# Deletion


def test_a_deleted_coupon_is_refused_and_its_earlier_redemptions_stay(customer, customer_client, staff_user):
    coupon = credits_coupon(1_000)
    first = redeem(customer_client, coupon.code)
    assert first.status_code == 201, first.content

    coupon_delete(coupon_id=coupon.pk, actor=staff_user)

    other = account_register(email="late@example.com", password=PASSWORD)
    response = redeem(client_of(other), coupon.code)
    assert_problem(response, 422, Reason.COUPON_DELETED)
    coupon.refresh_from_db()
    assert (coupon.is_active, coupon.deleted_by) == (False, staff_user)
    assert coupon.deleted_at is not None
    kept = CouponRedemption.objects.get(pk=first.json()["redemption_id"])
    assert (kept.coupon, kept.status, kept.user) == (coupon, RedemptionStatus.SUCCESS, customer)
    refused = CouponRedemption.objects.get(user=other)
    assert (refused.coupon, refused.status, refused.failure_reason) == (
        coupon,
        RedemptionStatus.FAILED,
        Reason.COUPON_DELETED,
    )
    assert balance_of(other) == 2_000
    assert total_uses(coupon) == 1


def test_deleting_the_redeeming_user_keeps_the_redemption_without_its_user(customer, customer_client):
    coupon = credits_coupon(1_000)
    response = redeem(customer_client, coupon.code)
    assert response.status_code == 201, response.content

    customer.delete()

    kept = CouponRedemption.objects.get(pk=response.json()["redemption_id"])
    assert (kept.user, kept.coupon, kept.coupon_code, kept.status) == (
        None,
        coupon,
        coupon.code,
        RedemptionStatus.SUCCESS,
    )
    assert kept.credits_granted == 1_000
