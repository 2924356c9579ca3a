"""`Idempotency-Key` on the endpoints that call Stripe: the key is held while the request runs outside
any transaction, a concurrent duplicate is told the request is in progress, a 5xx frees the key, and a
key left behind by a killed worker is freed after IDEMPOTENCY_IN_PROGRESS_TIMEOUT."""

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from billing_project.models import IdempotencyKey
from conftest import run_concurrently
from payments.models import OperationKind, PaymentOperation
from payments.tests.conftest import client_for, stripe_subscriber

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("catalog")]


def change_tier(subscription, key: str):
    return client_for(subscription.user).post(
        f"/api/v1/subscriptions/{subscription.pk}/change-tier/",
        {"tier": "enterprise_max"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )


def test_a_duplicate_sent_while_the_first_is_at_stripe_is_told_it_is_in_progress_and_nothing_is_charged_twice(
    stripe_http,
):
    subscription = stripe_subscriber(stripe_http)
    stripe_http.inject("POST", "invoices", "hang", seconds=1.0)

    first, second = run_concurrently(lambda delay: change_tier(subscription, "upgrade-1"), [0, 1])

    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 409], (first.content, second.content)
    in_use = first if first.status_code == 409 else second
    assert (in_use.json()["code"], in_use["Retry-After"]) == ("idempotency_key_in_use", "1")
    # the key now replays the stored answer
    replayed = change_tier(subscription, "upgrade-1")
    assert (replayed.status_code, replayed["Idempotent-Replayed"]) == (200, "true")
    assert len(stripe_http.charges) == 1
    assert PaymentOperation.objects.filter(kind=OperationKind.UPGRADE_CHARGE).count() == 1


def test_a_key_left_in_progress_by_a_killed_worker_is_freed_after_the_timeout(stripe_http, settings):
    subscription = stripe_subscriber(stripe_http)
    path = f"/api/v1/subscriptions/{subscription.pk}/change-tier/"
    body = JSONRenderer().render({"tier": "enterprise_max"})
    IdempotencyKey.objects.create(
        caller=f"user:{subscription.user_id}",
        path=path,
        key="upgrade-1",
        request_hash=hashlib.sha256(body).hexdigest(),
        status_code=0,
    )
    assert change_tier(subscription, "upgrade-1").status_code == 409  # still in progress, as far as anyone knows
    IdempotencyKey.objects.update(created_at=timezone.now() - settings.IDEMPOTENCY_IN_PROGRESS_TIMEOUT - timedelta(1))

    response = change_tier(subscription, "upgrade-1")

    assert response.status_code == 200, response.content
    assert len(stripe_http.charges) == 1
