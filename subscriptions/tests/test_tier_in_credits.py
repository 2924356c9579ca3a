"""Subscriptions pushes each user's tier and live subscription down to credits whenever they change;
the next usage record is priced at them without any lookup into subscriptions."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from credits.api.events import usage_event_parse
from credits.models import UserCreditBalance
from credits.services import credit_grant, pricing_catalog_seed, usage_record
from subscriptions.models import LIVE_STATUSES, Subscription, SubscriptionStatus, UserEntitlement
from subscriptions.services import subscription_status_change, tier_catalog_seed
from subscriptions.tests.conftest import StripeIds, customer_register, deliver, subscribe_through_checkout
from subscriptions.tests.test_entitlements import CHANGES, subscribed
from subscriptions.tests.test_webhooks import renewal_event

pytestmark = pytest.mark.django_db

# The seeded tier margins (SPEC 2).
MARGIN = {"free": "2.0000", "pro": "1.5000", "pro_max": "1.4000", "enterprise_pro": "1.3000"}


@pytest.fixture
def catalogs(db):
    tier_catalog_seed()
    pricing_catalog_seed()


def usage_priced(user) -> tuple[str, str, object]:
    """Records one request for the user: (tier, margin, subscription id) it was priced at and named,
    and proves that recording it read nothing of subscriptions."""
    started = timezone.now() - timedelta(seconds=1)
    event, _ = usage_event_parse(
        {
            "request_id": str(uuid.uuid4()),
            "user_id": user.pk,
            "provider": "openai",
            "model": "gpt-4o",
            "input_tokens": 1000,
            "output_tokens": 2000,
            "request_type": "chat",
            "request_started_at": started.isoformat(),
            "request_completed_at": (started + timedelta(milliseconds=500)).isoformat(),
        }
    )
    with CaptureQueriesContext(connection) as queries:
        usage = usage_record(event=event).usage
    assert not [query["sql"] for query in queries.captured_queries if "subscriptions_" in query["sql"]]
    return usage.user_tier_at_request, f"{usage.margin_multiplier:.4f}", usage.subscription_id


def live_subscription_id(user):
    return Subscription.objects.filter(user=user, status__in=LIVE_STATUSES).values_list("pk", flat=True).first()


@pytest.mark.usefixtures("catalogs")
@pytest.mark.parametrize("change", list(CHANGES))
def test_every_tier_change_prices_the_next_usage_record(user, staff_user, change):
    given, when, before, after = CHANGES[change]
    given(user, staff_user)
    credit_grant(user=user, amount=10_000, source="bonus", reason="usage in this test")
    assert usage_priced(user) == (before, MARGIN[before], live_subscription_id(user))

    when(user, staff_user)

    assert usage_priced(user) == (after, MARGIN[after], live_subscription_id(user))


@pytest.mark.usefixtures("stripe_http", "tier_catalog")
def test_a_webhook_renewal_that_restores_a_suspended_subscription_prices_at_its_tier_again(webhook_client):
    # given a Stripe-billed Pro subscription, suspended unpaid (free entitlements)
    user, ids = customer_register("subscriber@example.com"), StripeIds.new()
    subscription = subscribe_through_checkout(webhook_client, user, ids)
    pricing_catalog_seed()
    for status in (SubscriptionStatus.PAST_DUE, SubscriptionStatus.SUSPENDED):
        subscription_status_change(subscription_id=subscription.pk, status=status, reason="Unpaid", actor=None)
    assert usage_priced(user) == ("free", MARGIN["free"], subscription.pk)

    # when Stripe reports the renewal invoice paid
    response = deliver(webhook_client, renewal_event(subscription, ids.next_invoice()))

    assert response.status_code == 200, response.content
    assert usage_priced(user) == ("pro", MARGIN["pro"], subscription.pk)


@pytest.mark.usefixtures("catalogs")
def test_the_entitlement_cannot_be_typed_over_in_the_console_so_usage_stays_priced_at_the_subscription(
    admin_client, user
):
    subscribed(user, "pro")
    credit_grant(user=user, amount=10_000, source="bonus", reason="usage in this test")
    entitlement = UserEntitlement.objects.get(user=user)
    now = timezone.now()

    response = admin_client.post(
        f"/admin/subscriptions/userentitlement/{entitlement.pk}/change/",
        {
            "user": user.pk,
            "tier": "pro_max",
            "entitlements": "{}",
            "activated_at_0": now.date().isoformat(),
            "activated_at_1": now.time().strftime("%H:%M:%S"),
        },
    )

    assert response.status_code == 403
    entitlement.refresh_from_db()
    assert entitlement.tier == "pro"
    assert usage_priced(user)[:2] == ("pro", MARGIN["pro"])


@pytest.mark.usefixtures("catalogs")
def test_a_user_who_never_had_a_subscription_is_priced_at_free_without_a_tier_row_of_their_own(user):
    credit_grant(user=user, amount=10_000, source="bonus", reason="usage in this test")

    assert usage_priced(user) == ("free", MARGIN["free"], None)
    assert UserCreditBalance.objects.get(user=user).tier == "free"
