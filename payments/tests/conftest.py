"""Customers and subscriptions made the way they really are: through Stripe Checkout on the emulator
and its signed webhook."""

import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from conftest import access_token_for, bearer
from payments.tests.helpers import deliver_event
from subscriptions.models import Subscription
from subscriptions.services import account_register, tier_catalog_seed

PASSWORD = "correct horse battery staple"


@pytest.fixture
def stripe(stripe_http):
    """The emulator, also watching that no connection of ours sits inside a transaction while a
    request to Stripe is being answered."""
    stripe_http.watch_transactions(connection.settings_dict["NAME"])
    yield stripe_http
    assert stripe_http.state.transaction_violations == [], "a Stripe call was made inside a transaction"


@pytest.fixture
def catalog(db):
    tier_catalog_seed()


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(**bearer(access_token_for(user)))
    return client


def customer(email: str):
    return account_register(email=email, password=PASSWORD)


def stripe_subscriber(stripe, email: str = "payer@example.com", *, tier: str = "enterprise_pro") -> Subscription:
    """A customer who started `tier` (no trial) through Stripe Checkout, paid it, and whose
    checkout.session.completed arrived: a subscription Stripe bills, with the user's one customer.
    The emulator's request and charge logs start afresh after it."""
    user = customer(email)
    started = client_for(user).post("/api/v1/subscriptions/", {"tier": tier}, format="json")
    assert started.status_code == 201, started.content
    session = stripe.checkout_complete(started.json()["checkout"]["session_id"])
    row, _ = deliver_event("checkout.session.completed", session)
    assert row.status == "processed", row.error
    stripe.state.requests.clear()
    stripe.state.charges.clear()
    return Subscription.objects.get(user=user, tier=tier)


def ledger_is_consistent() -> bool:
    out = StringIO()
    try:
        call_command("verify_ledger", "--no-progress", stdout=out, stderr=StringIO())
    except SystemExit:
        sys.stderr.write(out.getvalue())
        return False
    return True


@pytest.fixture
def fail_inserts_into(django_db_blocker):
    """Makes the database refuse every insert into a table until the test lifts it: a failure after
    the provider answered and before our commit (PostgreSQL)."""
    installed = []

    def install(table: str):
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE OR REPLACE FUNCTION test_injected_failure() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'injected failure before commit'; END $$"
            )
            cursor.execute(
                f"CREATE TRIGGER test_injected_failure BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION test_injected_failure()"
            )
        installed.append(table)

        def lift():
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TRIGGER IF EXISTS test_injected_failure ON {table}")
            installed.remove(table)

        return lift

    yield install
    with connection.cursor() as cursor:
        for table in installed:
            cursor.execute(f"DROP TRIGGER IF EXISTS test_injected_failure ON {table}")
