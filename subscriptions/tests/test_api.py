"""The subscriptions API over HTTP (SPEC section 5): start, tier change and its preview, cancel, the
caller's own subscription, entitlements and invoices, and the staff routes."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from audit.models import AdminAuditLog, AuditAction
from billing_project.auth import OTP_CLAIM
from conftest import access_token_for, bearer
from credits.models import CreditAllocation
from payments.models import PaymentOperation
from subscriptions.catalog import TIERS
from subscriptions.models import (
    LIVE_STATUSES,
    BillingInvoice,
    ProrationEvent,
    Subscription,
    SubscriptionStatus,
    UserEntitlement,
)
from subscriptions.services import entitlement_activate, subscription_start_free, tier_catalog_seed
from subscriptions.tests.factories import BillingInvoiceFactory, SubscriptionFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

PROBLEM = "application/problem+json"
ENTITLEMENTS = {spec["tier"]: spec["entitlements"] for spec in TIERS}
PRICES = {spec["tier"]: spec["monthly_price_usd"] for spec in TIERS}
CREDITS = {spec["tier"]: spec["monthly_credit_allocation"] for spec in TIERS}
DAY = timedelta(days=1)
S = SubscriptionStatus


@pytest.fixture
def catalog(db):
    tier_catalog_seed()


@pytest.fixture
def on_free(user):
    """`user` on the free tier, as registration leaves them."""
    return subscription_start_free(user=user)


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


def subscribed(user, tier="pro", *, status=S.ACTIVE, days_gone=0, stripe=False, **fields) -> Subscription:
    """A paid subscription in a 30-day period of which `days_gone` days have passed."""
    start = timezone.now().replace(microsecond=0) - days_gone * DAY
    defaults = {
        "base_price_usd": PRICES[tier],
        "monthly_credit_allocation": CREDITS[tier],
        "current_period_start": start,
        "current_period_end": start + 30 * DAY,
        "stripe_customer_id": f"cus_{user.pk}" if stripe else None,
        "stripe_subscription_id": f"sub_{user.pk}" if stripe else None,
    }
    subscription = SubscriptionFactory(user=user, tier=tier, status=status, **{**defaults, **fields})
    entitlement_activate(user=user, tier=tier)
    return subscription


def url(subscription, action: str) -> str:
    return f"/api/v1/subscriptions/{subscription.pk}/{action}/"


# POST subscriptions/


def test_start_answers_201_with_the_trial(user_client, user, on_free):
    response = user_client.post("/api/v1/subscriptions/", {"tier": "pro"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    trial = Subscription.objects.get(user=user, status=S.TRIAL)
    assert body["checkout"] is None
    assert (body["subscription"]["id"], body["subscription"]["tier"], body["subscription"]["status"]) == (
        str(trial.pk),
        "pro",
        "trial",
    )
    assert body["subscription"]["base_price_usd"] == "19.00"
    assert body["subscription"]["trial_ends_at"] is not None


def test_start_offline_answers_201_with_the_active_subscription_and_the_completed_checkout(user_client, user, on_free):
    response = user_client.post(
        "/api/v1/subscriptions/", {"tier": "enterprise_pro", "billing_cycle": "annual"}, format="json"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    subscription = Subscription.objects.get(user=user, status=S.ACTIVE)
    assert body["subscription"]["id"] == str(subscription.pk)
    assert (body["subscription"]["status"], body["subscription"]["billing_cycle"]) == ("active", "annual")
    assert body["subscription"]["base_price_usd"] == "1490.00"
    assert body["checkout"] == {
        "url": None,
        "session_id": subscription.checkout_session_id,
        "completed": True,
        "operation_id": str(PaymentOperation.objects.get(user=user).pk),
    }


def test_start_with_stripe_answers_201_with_the_checkout_url_and_no_subscription(
    user_client, user, on_free, stripe_http
):
    response = user_client.post("/api/v1/subscriptions/", {"tier": "enterprise_pro"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["subscription"] is None
    assert body["checkout"]["completed"] is False
    assert body["checkout"]["url"].startswith("https://checkout.stripe.com/")
    (session_request,) = (request for request in stripe_http.requests if request["path"] == "checkout/sessions")
    assert session_request["form"]["client_reference_id"] == str(user.pk)
    assert list(Subscription.objects.filter(user=user)) == [on_free]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"tier": "platinum"}, "tier"), ({}, "tier"), ({"tier": "pro", "billing_cycle": "weekly"}, "billing_cycle")],
)
def test_start_with_a_bad_field_is_a_400_naming_it(user_client, user, on_free, body, field):
    response = user_client.post("/api/v1/subscriptions/", body, format="json")

    problem = assert_problem(response, 400, "validation_error")
    assert list(problem["errors"]) == [field]
    assert list(Subscription.objects.filter(user=user)) == [on_free]


@pytest.mark.parametrize("tier", ["free", "perpetual"])
def test_start_of_a_tier_not_sold_as_a_subscription_is_a_422(user_client, user, on_free, tier):
    response = user_client.post("/api/v1/subscriptions/", {"tier": tier}, format="json")

    problem = assert_problem(response, 422, "tier_not_subscribable")
    assert "tier" in problem["errors"]
    assert list(Subscription.objects.filter(user=user)) == [on_free]


def test_start_with_a_live_paid_subscription_is_a_409(user_client, user):
    subscription = subscribed(user, "pro")

    response = user_client.post("/api/v1/subscriptions/", {"tier": "pro_max"}, format="json")

    problem = assert_problem(response, 409, "subscription_exists")
    assert problem["subscription_id"] == str(subscription.pk)
    assert Subscription.objects.filter(user=user).count() == 1


# Tier changes


def test_preview_answers_the_seed_check_numbers_as_strings_and_writes_nothing(user_client, user):
    subscription = subscribed(user, "pro", days_gone=15)
    now = subscription.current_period_start + 15 * DAY

    with time_machine.travel(now, tick=False):
        response = user_client.post(url(subscription, "change-tier/preview"), {"tier": "pro_max"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert {key: body[key] for key in ("unused_credit_value_usd", "new_tier_prorated_cost_usd", "net_charge_usd")} == {
        "unused_credit_value_usd": "9.50",
        "new_tier_prorated_cost_usd": "19.50",
        "net_charge_usd": "10.00",
    }
    assert body["credits_adjustment"] == 15_000
    assert (body["change_type"], body["days_remaining"], body["days_in_cycle"]) == ("upgrade", 15, 30)
    assert body["effective_date"] == now.isoformat().replace("+00:00", "Z")
    assert not ProrationEvent.objects.exists()
    assert not BillingInvoice.objects.exists()
    subscription.refresh_from_db()
    assert subscription.tier == "pro"


def test_preview_of_a_downgrade_is_effective_at_the_period_end(user_client, user):
    subscription = subscribed(user, "pro_max", days_gone=10)

    response = user_client.post(url(subscription, "change-tier/preview"), {"tier": "pro"}, format="json")

    body = response.json()
    assert (body["change_type"], body["net_charge_usd"], body["credits_adjustment"]) == ("downgrade", "0.00", 0)
    assert body["effective_date"] == subscription.current_period_end.isoformat().replace("+00:00", "Z")


def test_change_tier_upgrades_now_and_answers_the_subscription_and_its_proration(user_client, user):
    subscription = subscribed(user, "pro", days_gone=15)

    with time_machine.travel(subscription.current_period_start + 15 * DAY, tick=False):
        response = user_client.post(url(subscription, "change-tier"), {"tier": "pro_max"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["subscription"]["tier"], body["subscription"]["base_price_usd"]) == ("pro_max", "39.00")
    event = ProrationEvent.objects.get()
    assert body["proration"]["id"] == str(event.pk)
    assert (body["proration"]["status"], body["proration"]["net_charge_usd"]) == ("applied", "10.00")
    assert body["proration"]["credits_adjustment"] == 15_000
    assert BillingInvoice.objects.get().amount_paid_usd == Decimal("10.00")


def test_change_tier_downgrade_answers_the_scheduled_tier(user_client, user):
    subscription = subscribed(user, "pro_max", days_gone=10)

    response = user_client.post(url(subscription, "change-tier"), {"tier": "pro"}, format="json")

    body = response.json()
    assert (body["subscription"]["tier"], body["subscription"]["scheduled_tier"]) == ("pro_max", "pro")
    assert (body["proration"]["change_type"], body["proration"]["status"]) == ("downgrade", "pending")


def test_change_tier_with_a_declined_card_is_a_402_and_changes_nothing(
    user_client, user, stripe_http, django_capture_on_commit_callbacks
):
    subscription = subscribed(user, "pro", days_gone=15, stripe=True)
    stripe_http.pay_mode = "decline"

    with django_capture_on_commit_callbacks(execute=True):
        response = user_client.post(url(subscription, "change-tier"), {"tier": "pro_max"}, format="json")

    problem = assert_problem(response, 402, "payment_declined")
    assert problem["decline_code"] == "card_declined"
    subscription.refresh_from_db()
    assert subscription.tier == "pro"
    assert ProrationEvent.objects.get().status == "failed"
    assert not CreditAllocation.objects.exists()
    assert UserEntitlement.objects.get(user=user).tier == "pro"
    # the declined invoice is voided, so it can never be paid later
    operation = PaymentOperation.objects.get(kind="upgrade_charge")
    assert (operation.state, operation.effect) == ("failed", "failed")
    assert stripe_http.object(operation.stripe_invoice_id)["status"] == "void"
    assert stripe_http.charges == []


@pytest.mark.parametrize(
    ("tier", "status", "code"),
    [("pro", 422, "same_tier"), ("free", 422, "tier_not_subscribable"), ("perpetual", 422, "tier_not_subscribable")],
)
def test_change_tier_refusals_are_problems(user_client, user, tier, status, code):
    subscription = subscribed(user, "pro")

    for action in ("change-tier/preview", "change-tier"):
        assert_problem(user_client.post(url(subscription, action), {"tier": tier}, format="json"), status, code)
    assert not ProrationEvent.objects.exists()


def test_change_tier_of_a_trial_is_a_409(user_client, user):
    subscription = subscribed(user, "pro", status=S.TRIAL)

    response = user_client.post(url(subscription, "change-tier"), {"tier": "pro_max"}, format="json")

    assert_problem(response, 409, "subscription_not_active")


# Cancel


def test_cancel_answers_the_subscription_cancelling_at_period_end(user_client, user):
    subscription = subscribed(user, "pro")

    response = user_client.post(url(subscription, "cancel"), {"reason": "Too expensive"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["status"], body["cancel_at_period_end"]) == (str(subscription.pk), "active", True)
    subscription.refresh_from_db()
    assert subscription.cancel_at_period_end is True


def test_cancel_immediately_is_for_staff_only(user_client, staff_client, user):
    subscription = subscribed(user, "pro")

    refused = user_client.post(url(subscription, "cancel"), {"immediately": True}, format="json")
    done = staff_client.post(url(subscription, "cancel"), {"immediately": True, "reason": "Fraud"}, format="json")

    assert_problem(refused, 422, "immediate_cancel_staff_only")
    assert done.status_code == 200, done.content
    assert done.json()["status"] == "cancelled"
    (live,) = Subscription.objects.filter(user=user, status__in=LIVE_STATUSES)
    assert live.tier == "free"


# Regression (issue 20): `is_staff` alone was a billing admin; here it let staff without any
# permission change or end anyone's subscription through the customer routes.
def test_staff_without_the_change_permission_are_customers_on_the_subscription_routes(user, django_user_model):
    subscription = subscribed(user, "pro")
    bare = django_user_model.objects.create_user(username="bare@example.com", email="bare@example.com", is_staff=True)
    client = APIClient()
    client.credentials(**bearer(access_token_for(bare)))

    preview = client.post(url(subscription, "change-tier/preview"), {"tier": "pro_max"}, format="json")
    change = client.post(url(subscription, "change-tier"), {"tier": "pro_max"}, format="json")
    cancel = client.post(url(subscription, "cancel"), {"immediately": True}, format="json")

    for response in (preview, change, cancel):
        assert_problem(response, 404, "subscription_not_found")
    subscription.refresh_from_db()
    assert (subscription.tier, subscription.status, subscription.cancel_at_period_end) == ("pro", "active", False)


# Regression: the staff routes asked staff for the second factor, the customer routes (where staff
# act on anyone's subscription) did not: a token without it could end another user's subscription.
def test_staff_without_the_second_factor_they_need_are_customers_on_the_subscription_routes(settings, user, staff_user):
    settings.STAFF_2FA_REQUIRED = True
    subscription = subscribed(user, "pro")
    plain = RefreshToken.for_user(staff_user)
    verified = RefreshToken.for_user(staff_user)
    verified[OTP_CLAIM] = True
    body = {"immediately": True, "reason": "Fraud"}

    refused = APIClient().post(url(subscription, "cancel"), body, format="json", **bearer(str(plain.access_token)))
    subscription.refresh_from_db()
    status_after_refusal = subscription.status
    done = APIClient().post(url(subscription, "cancel"), body, format="json", **bearer(str(verified.access_token)))

    assert_problem(refused, 404, "subscription_not_found")
    assert status_after_refusal == "active"
    assert done.status_code == 200, done.content
    assert done.json()["status"] == "cancelled"


def test_cancel_of_the_free_tier_is_a_422(user_client, on_free):
    response = user_client.post(url(on_free, "cancel"), {}, format="json")

    assert_problem(response, 422, "free_tier_not_cancellable")


# No cross-user access


@pytest.mark.parametrize(
    ("action", "body"),
    [("change-tier/preview", {"tier": "pro_max"}), ("change-tier", {"tier": "pro_max"}), ("cancel", {})],
)
def test_another_users_subscription_is_404(user_client, other_user, action, body):
    theirs = subscribed(other_user, "pro")

    response = user_client.post(url(theirs, action), body, format="json")

    assert_problem(response, 404, "subscription_not_found")
    theirs.refresh_from_db()
    assert (theirs.tier, theirs.cancel_at_period_end) == ("pro", False)
    assert not ProrationEvent.objects.exists()


def test_an_unknown_subscription_id_is_404(user_client):
    response = user_client.post("/api/v1/subscriptions/00000000-0000-0000-0000-000000000000/cancel/", {}, format="json")

    assert_problem(response, 404, "subscription_not_found")


# me/


def test_me_subscription_answers_the_live_subscription(user_client, user):
    subscribed(user, "pro", status=S.CANCELLED)
    live = subscribed(user, "pro_max")

    response = user_client.get("/api/v1/me/subscription/")

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["tier"], body["status"], body["base_price_usd"]) == (
        str(live.pk),
        "pro_max",
        "active",
        "39.00",
    )


def test_me_subscription_without_one_is_404(user_client):
    assert_problem(user_client.get("/api/v1/me/subscription/"), 404, "no_subscription")


def test_me_entitlements_answers_the_tiers_entitlements(user_client, user):
    subscribed(user, "pro_max")

    response = user_client.get("/api/v1/me/entitlements/")

    assert response.status_code == 200
    body = response.json()
    assert (body["tier"], body["entitlements"], body["expires_at"]) == ("pro_max", ENTITLEMENTS["pro_max"], None)


def test_me_invoices_lists_only_the_callers_invoices_a_page_at_a_time(user_client, user, other_user):
    mine = subscribed(user, "pro")
    start = mine.current_period_start
    for month in range(3):
        BillingInvoiceFactory(user=user, subscription=mine, period_start=start + month * 30 * DAY)
    BillingInvoiceFactory(user=other_user, subscription=subscribed(other_user, "pro"))

    first = user_client.get("/api/v1/me/invoices/", {"page_size": 2})
    second = user_client.get(first.json()["next"])

    assert first.status_code == second.status_code == 200
    assert first.json()["count"] == 3
    rows = first.json()["results"] + second.json()["results"]
    assert len(rows) == 3
    assert {row["id"] for row in rows} == {
        str(pk) for pk in BillingInvoice.objects.filter(user=user).values_list("pk", flat=True)
    }
    assert [row["period_start"] for row in rows] == sorted((row["period_start"] for row in rows), reverse=True)
    assert rows[0]["amount_due_usd"] == "19.00"


# Staff


def test_staff_list_subscriptions_filtered_by_status_tier_and_user(staff_client, user, other_user):
    mine = subscribed(user, "pro")
    theirs = subscribed(other_user, "pro_max", status=S.PAST_DUE)

    everything = staff_client.get("/api/v1/admin/subscriptions/").json()
    past_due = staff_client.get("/api/v1/admin/subscriptions/", {"status": "past_due"}).json()
    pro = staff_client.get("/api/v1/admin/subscriptions/", {"tier": "pro"}).json()
    of_user = staff_client.get("/api/v1/admin/subscriptions/", {"user": user.pk}).json()
    none = staff_client.get("/api/v1/admin/subscriptions/", {"tier": "pro", "status": "past_due"}).json()

    assert everything["count"] == 2
    assert [row["id"] for row in past_due["results"]] == [str(theirs.pk)]
    assert [row["id"] for row in pro["results"]] == [str(mine.pk)]
    assert [(row["id"], row["user_id"], row["user_email"]) for row in of_user["results"]] == [
        (str(mine.pk), user.pk, user.email)
    ]
    assert none["count"] == 0


def test_staff_list_with_an_unknown_status_is_a_400(staff_client):
    response = staff_client.get("/api/v1/admin/subscriptions/", {"status": "asleep"})

    problem = assert_problem(response, 400, "validation_error")
    assert list(problem["errors"]) == ["status"]


def test_staff_change_status_answers_200_and_audits_the_reason(staff_client, staff_user, user):
    subscription = subscribed(user, "pro")

    response = staff_client.post(
        f"/api/v1/admin/subscriptions/{subscription.pk}/change-status/",
        {"status": "past_due", "reason": "Card expired"},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert (response.json()["id"], response.json()["status"]) == (str(subscription.pk), "past_due")
    subscription.refresh_from_db()
    assert subscription.status == S.PAST_DUE
    (row,) = AdminAuditLog.objects.filter(action=AuditAction.TRANSITION)
    assert (row.actor, row.new_value["reason"], row.method) == (staff_user, "Card expired", "POST")


def test_staff_change_status_along_a_forbidden_move_is_a_409_with_both_statuses(staff_client, user):
    subscription = subscribed(user, "pro", status=S.CANCELLED)

    response = staff_client.post(
        f"/api/v1/admin/subscriptions/{subscription.pk}/change-status/",
        {"status": "active", "reason": "Undo"},
        format="json",
    )

    problem = assert_problem(response, 409, "invalid_transition")
    assert (problem["from_status"], problem["to_status"]) == ("cancelled", "active")
    subscription.refresh_from_db()
    assert subscription.status == S.CANCELLED
    assert not AdminAuditLog.objects.filter(action=AuditAction.TRANSITION).exists()
    (failure,) = AdminAuditLog.objects.all()
    assert failure.status_code == 409


@pytest.mark.parametrize(("body", "field"), [({"status": "active"}, "reason"), ({"reason": "x"}, "status")])
def test_staff_change_status_needs_a_status_and_a_reason(staff_client, user, body, field):
    subscription = subscribed(user, "pro", status=S.PAST_DUE)

    response = staff_client.post(f"/api/v1/admin/subscriptions/{subscription.pk}/change-status/", body, format="json")

    problem = assert_problem(response, 400, "validation_error")
    assert field in problem["errors"]
    subscription.refresh_from_db()
    assert subscription.status == S.PAST_DUE


def test_admin_routes_are_403_for_a_plain_user(user_client, user):
    subscription = subscribed(user, "pro")

    listing = user_client.get("/api/v1/admin/subscriptions/")
    change = user_client.post(
        f"/api/v1/admin/subscriptions/{subscription.pk}/change-status/",
        {"status": "cancelled", "reason": "Me"},
        format="json",
    )

    assert_problem(listing, 403, "permission_denied")
    assert_problem(change, 403, "permission_denied")
    subscription.refresh_from_db()
    assert subscription.status == S.ACTIVE


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/admin/subscriptions/"),
        ("post", "/api/v1/subscriptions/"),
        ("get", "/api/v1/me/subscription/"),
        ("get", "/api/v1/me/entitlements/"),
        ("get", "/api/v1/me/invoices/"),
    ],
)
def test_no_credentials_is_401(api_client, method, path):
    response = getattr(api_client, method)(path, {"tier": "pro"} if method == "post" else None, format="json")

    assert response.status_code == 401
    assert response["Content-Type"] == PROBLEM
    assert not Subscription.objects.exists()


def test_a_token_of_another_user_sees_only_that_users_subscription(user, other_user):
    subscribed(user, "pro")
    theirs = subscribed(other_user, "pro_max")
    client = APIClient()
    client.credentials(**bearer(access_token_for(other_user)))

    response = client.get("/api/v1/me/subscription/")

    assert response.json()["id"] == str(theirs.pk)
