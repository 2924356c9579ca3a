"""What a user may use follows their subscription through every change, and the cached copy that
me/entitlements answers from is dropped by each change, in this process and in any other."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conftest import forget_test_cache
from subscriptions import jobs
from subscriptions.catalog import TIERS
from subscriptions.models import Subscription, SubscriptionStatus, UserEntitlement
from subscriptions.selectors import entitlements_cache_key, entitlements_for
from subscriptions.services import (
    account_register,
    entitlement_activate,
    subscription_start,
    subscription_start_free,
    subscription_status_change,
    tier_catalog_seed,
    tier_change,
    trial_expire,
)
from subscriptions.tests.factories import SubscriptionFactory

ENTITLEMENTS = {spec["tier"]: spec["entitlements"] for spec in TIERS}
PRICES = {spec["tier"]: spec["monthly_price_usd"] for spec in TIERS}
CREDITS = {spec["tier"]: spec["monthly_credit_allocation"] for spec in TIERS}
ENTITLEMENT_TABLE = UserEntitlement._meta.db_table
DAY = timedelta(days=1)
S = SubscriptionStatus


@pytest.fixture
def catalog(db):
    tier_catalog_seed()


def subscribed(user, tier="pro", *, status=S.ACTIVE, days_gone=15) -> Subscription:
    """An offline-billed subscription in a 30-day period of which `days_gone` days have passed,
    with the entitlements its status gives."""
    start = timezone.now() - days_gone * DAY
    subscription = SubscriptionFactory(
        user=user,
        tier=tier,
        status=status,
        base_price_usd=PRICES[tier],
        monthly_credit_allocation=CREDITS[tier],
        current_period_start=start,
        current_period_end=start + 30 * DAY,
        stripe_customer_id=None,
        stripe_subscription_id=None,
    )
    entitlement_activate(user=user, tier="free" if status == S.SUSPENDED else tier)
    return subscription


def entitlement_table_queries(queries) -> list[str]:
    return [query["sql"] for query in queries.captured_queries if ENTITLEMENT_TABLE in query["sql"]]


# Each change: (given, when, tier before, tier after)


def _on_free(user, staff):
    subscription_start_free(user=user)


def _in_trial(user, staff):
    subscription_start_free(user=user)
    subscription_start(user=user, tier="pro")


def _trial_ends(user, staff):
    trial = Subscription.objects.get(user=user, status=S.TRIAL)
    trial_expire(subscription_id=trial.pk, now=trial.trial_ends_at)


def _downgrade_scheduled(user, staff):
    subscription = subscribed(user, "pro_max")
    tier_change(subscription_id=subscription.pk, user=user, tier="pro")


def _renewal(user, staff):
    subscription = Subscription.objects.get(user=user)
    jobs.monthly_credits_allocate(now=subscription.current_period_end + timedelta(minutes=1))


def _status_change(status):
    def change(user, staff):
        subscription = Subscription.objects.get(user=user, tier__in=("pro", "pro_max"))
        subscription_status_change(subscription_id=subscription.pk, status=status, reason="Staff", actor=staff)

    return change


CHANGES = {
    "checkout": (
        _on_free,
        lambda user, staff: subscription_start(user=user, tier="enterprise_pro"),
        "free",
        "enterprise_pro",
    ),
    "trial_start": (_on_free, lambda user, staff: subscription_start(user=user, tier="pro"), "free", "pro"),
    "trial_conversion": (_in_trial, lambda user, staff: subscription_start(user=user, tier="pro"), "pro", "pro"),
    "trial_end": (_in_trial, _trial_ends, "pro", "free"),
    "upgrade": (
        lambda user, staff: subscribed(user, "pro"),
        lambda user, staff: tier_change(
            subscription_id=Subscription.objects.get(user=user).pk, user=user, tier="pro_max"
        ),
        "pro",
        "pro_max",
    ),
    "downgrade_at_renewal": (_downgrade_scheduled, _renewal, "pro_max", "pro"),
    "suspension": (
        lambda user, staff: subscribed(user, "pro", status=S.PAST_DUE),
        _status_change(S.SUSPENDED),
        "pro",
        "free",
    ),
    "restore": (
        lambda user, staff: subscribed(user, "pro_max", status=S.SUSPENDED),
        _status_change(S.ACTIVE),
        "free",
        "pro_max",
    ),
    "cancellation": (lambda user, staff: subscribed(user, "pro"), _status_change(S.CANCELLED), "pro", "free"),
}


@pytest.mark.django_db
@pytest.mark.usefixtures("catalog")
@pytest.mark.parametrize("change", list(CHANGES))
def test_every_change_sets_the_entitlements_and_drops_the_cached_copy_when_it_commits(
    user, staff_user, change, django_capture_on_commit_callbacks
):
    given, when, before, after = CHANGES[change]
    given(user, staff_user)
    forget_test_cache()
    assert entitlements_for(user=user)["tier"] == before  # now cached
    assert cache.get(entitlements_cache_key(user.pk))["tier"] == before

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        when(user, staff_user)

    assert callbacks
    assert cache.get(entitlements_cache_key(user.pk)) is None
    entitlement = UserEntitlement.objects.get(user=user)
    assert (entitlement.tier, entitlement.entitlements) == (after, ENTITLEMENTS[after])
    body = entitlements_for(user=user)
    assert (body["tier"], body["entitlements"]) == (after, ENTITLEMENTS[after])


@pytest.mark.django_db
@pytest.mark.usefixtures("catalog")
def test_a_trial_grants_the_tiers_entitlements_until_the_trial_ends(user):
    subscription_start_free(user=user)

    trial = subscription_start(user=user, tier="pro_max").subscription

    body = entitlements_for(user=user)
    assert (body["tier"], body["entitlements"]) == ("pro_max", ENTITLEMENTS["pro_max"])
    assert body["expires_at"] == trial.trial_ends_at
    trial_expire(subscription_id=trial.pk, now=trial.trial_ends_at)
    entitlement = UserEntitlement.objects.get(user=user)
    assert (entitlement.tier, entitlement.expires_at) == ("free", None)


@pytest.mark.django_db
@pytest.mark.usefixtures("catalog")
def test_a_scheduled_downgrade_keeps_the_higher_entitlements_until_the_renewal(user):
    _downgrade_scheduled(user, None)

    assert entitlements_for(user=user)["tier"] == "pro_max"
    assert UserEntitlement.objects.get(user=user).tier == "pro_max"


@pytest.mark.django_db
@pytest.mark.usefixtures("catalog")
def test_a_user_without_entitlements_reads_as_free(user):
    assert entitlements_for(user=user) == {"tier": "free", "entitlements": {}, "activated_at": None, "expires_at": None}


@pytest.mark.django_db
@pytest.mark.usefixtures("catalog")
def test_the_second_read_comes_from_the_cache_without_a_query(user, django_assert_num_queries):
    subscribed(user, "pro")
    first = entitlements_for(user=user)

    with django_assert_num_queries(0):
        second = entitlements_for(user=user)

    assert second == first


@pytest.mark.django_db
@pytest.mark.usefixtures("catalog")
def test_me_entitlements_answers_the_second_read_from_the_cache(user_client, user):
    subscribed(user, "pro_max")

    with CaptureQueriesContext(connection) as first_queries:
        first = user_client.get("/api/v1/me/entitlements/")
    with CaptureQueriesContext(connection) as second_queries:
        second = user_client.get("/api/v1/me/entitlements/")

    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert first.json()["tier"] == "pro_max"
    assert entitlement_table_queries(first_queries)  # the check below can see such a query
    assert entitlement_table_queries(second_queries) == []


@pytest.mark.django_db
@pytest.mark.usefixtures("catalog")
def test_a_staff_change_through_the_api_is_seen_by_the_customers_next_read(
    user_client, staff_client, user, django_capture_on_commit_callbacks
):
    subscription = subscribed(user, "pro", status=S.PAST_DUE)
    assert user_client.get("/api/v1/me/entitlements/").json()["tier"] == "pro"

    with django_capture_on_commit_callbacks(execute=True):
        changed = staff_client.post(
            f"/api/v1/admin/subscriptions/{subscription.pk}/change-status/",
            {"status": "suspended", "reason": "Unpaid for 14 days"},
            format="json",
        )

    assert changed.status_code == 200, changed.content
    body = user_client.get("/api/v1/me/entitlements/").json()
    assert (body["tier"], body["entitlements"]) == ("free", ENTITLEMENTS["free"])


# Two processes sharing the Redis cache

OTHER_PROCESS_READ = """
import json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from subscriptions.models import UserEntitlement
from subscriptions.selectors import entitlements_cache_key, entitlements_for

user = get_user_model().objects.get(pk=int(sys.argv[1]))
with CaptureQueriesContext(connection) as queries:
    body = entitlements_for(user=user)
table = UserEntitlement._meta.db_table
queried = any(table in q["sql"] for q in queries.captured_queries)
print(json.dumps({"tier": body["tier"], "queried": queried, "key": entitlements_cache_key(user.pk)}))
"""

OTHER_PROCESS_CANCEL = """
import sys
import django
django.setup()
from subscriptions.services import subscription_status_change

subscription_status_change(subscription_id=sys.argv[1], status="cancelled", reason="Done elsewhere", actor=None)
"""


def in_other_process(code: str, argument) -> str:
    database = connection.settings_dict
    credentials = quote(database["USER"] or "", safe="")
    if database.get("PASSWORD"):
        credentials += ":" + quote(database["PASSWORD"], safe="")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "billing_project.settings",
        "DATABASE_URL": f"postgres://{credentials}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
    }
    done = subprocess.run(
        [sys.executable, "-c", code, str(argument)],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def read_in_other_process(user) -> tuple[dict, str]:
    """The tier the other process read and whether it queried the table for it; and, for a failure's
    message, which key it read and what this process's cache holds there."""
    seen = json.loads(in_other_process(OTHER_PROCESS_READ, user.pk))
    key = seen.pop("key")
    seen_here = entitlements_cache_key(user.pk)
    held = cache.get(seen_here)
    where = f"read {key!r}; this process reads {seen_here!r}, holding {held!r}, its cache breaker {cache.breaker.state}"
    return seen, where


@pytest.fixture
def shared_cache():
    if not settings.REDIS_URL:
        pytest.skip("needs a Redis cache shared by two processes: set REDIS_URL (and DATABASE_URL) to run it")
    if connection.vendor != "postgresql":
        pytest.skip("needs a database another process can open: set DATABASE_URL to a PostgreSQL database")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("shared_cache")
def test_a_change_in_one_process_is_seen_by_the_next_read_of_another(django_assert_num_queries):
    # given: a free user whose entitlements both processes have read (and so cached)
    tier_catalog_seed()
    user = account_register(email="two@example.com", password="correct horse battery staple")
    assert entitlements_for(user=user)["tier"] == "free"
    seen, where = read_in_other_process(user)
    assert seen == {"tier": "free", "queried": False}, where

    # when: this process changes the tier through a service (which commits)
    subscription = subscription_start(user=user, tier="enterprise_pro").subscription

    # then: the other process reads the new tier from the database, and fills the shared cache ...
    seen, where = read_in_other_process(user)
    assert seen == {"tier": "enterprise_pro", "queried": True}, where
    assert cache.get(entitlements_cache_key(user.pk))["tier"] == "enterprise_pro"
    # ... which this process then answers from, without a query
    with django_assert_num_queries(0):
        assert entitlements_for(user=user)["tier"] == "enterprise_pro"

    # and the other way round: a change made in the other process drops this process's copy
    in_other_process(OTHER_PROCESS_CANCEL, subscription.pk)
    assert entitlements_for(user=user)["tier"] == "free"
    assert get_user_model().objects.get(pk=user.pk).subscriptions.get(pk=subscription.pk).status == S.CANCELLED


@pytest.mark.django_db
@pytest.mark.usefixtures("catalog")
def test_a_read_that_loaded_the_row_before_a_change_committed_cannot_serve_the_old_value_afterwards(
    user, django_capture_on_commit_callbacks
):
    subscribed(user, "pro")
    forget_test_cache()
    key_seen_by_the_slow_reader = entitlements_cache_key(user.pk)
    stale_row = {"tier": "pro", "entitlements": ENTITLEMENTS["pro"], "activated_at": None, "expires_at": None}

    with django_capture_on_commit_callbacks(execute=True):
        entitlement_activate(user=user, tier="pro_max")
    cache.set(key_seen_by_the_slow_reader, stale_row)  # the slow reader fills its cache entry late

    assert entitlements_for(user=user)["tier"] == "pro_max"
