"""A low and a depleted balance are told once per fall, re-armed by a grant that brings the balance
back up; a refused request tells nothing."""

import pytest
from django.core import mail

from billing_project.models import Notification
from conftest import run_concurrently
from credits.models import UserCreditSource
from credits.tests.conftest import fund, usage_event

RECORD = "/api/v1/usage/record/"
COST = 70  # usage_event(): 1000 in + 2000 out on gpt-4o at the free tier's margin
LOW = "credits.balance_low"
DEPLETED = "credits.balance_depleted"

pytestmark = pytest.mark.usefixtures("price_catalog")


@pytest.fixture(autouse=True)
def low_threshold(settings):
    settings.CREDITS_LOW_BALANCE_THRESHOLD = 100


def told(user) -> list[tuple[str, str]]:
    return list(Notification.objects.filter(user=user).order_by("created_at").values_list("kind", "occurrence"))


def record(client, user, times: int) -> list[int]:
    return [client.post(RECORD, usage_event(user), format="json").status_code for _ in range(times)]


@pytest.mark.django_db
def test_falling_below_the_threshold_tells_a_low_balance_once(service_client, user, django_capture_on_commit_callbacks):
    fund(user, 300)

    with django_capture_on_commit_callbacks(execute=True):
        statuses = record(service_client, user, 4)  # 230, 160, 90, 20

    assert statuses == [201] * 4
    assert told(user) == [(LOW, f"{user.pk}:first")]
    assert Notification.objects.get(kind=LOW).context == {"user_id": user.pk, "balance": 90, "threshold": 100}
    (message,) = mail.outbox
    assert (message.subject, message.to) == ("Your credit balance is low: 90 credits left", [user.email])
    assert "below 100" in message.body and "<strong>90 credits</strong>" in message.alternatives[0][0]


@pytest.mark.django_db
def test_reaching_zero_tells_a_depleted_balance_once_and_refusals_tell_nothing(
    service_client, user, django_capture_on_commit_callbacks
):
    fund(user, 2 * COST)

    with django_capture_on_commit_callbacks(execute=True):
        statuses = record(service_client, user, 4)  # 70 (low), 0 (depleted), refused, refused

    assert statuses == [201, 201, 402, 402]
    assert told(user) == [(LOW, f"{user.pk}:first"), (DEPLETED, f"{user.pk}:first")]
    assert sorted(message.subject for message in mail.outbox) == [
        "Your credit balance is low: 70 credits left",
        "Your credits have run out",
    ]


@pytest.mark.django_db
def test_a_grant_that_brings_the_balance_back_up_rearms_both_as_new_occurrences(service_client, user):
    # given a balance that fell low, then to zero
    fund(user, 2 * COST)
    record(service_client, user, 2)

    # when a grant brings it above the threshold and it falls again, twice over
    grant = fund(user, 3 * COST).allocation.grants.get()
    record(service_client, user, 3)  # 140 (nothing: above), 70 (low), 0 (depleted)

    # then each fall is told once more, keyed by the grant that re-armed it
    assert told(user)[2:] == [(LOW, f"{user.pk}:{grant.pk}"), (DEPLETED, f"{user.pk}:{grant.pk}")]


@pytest.mark.django_db
def test_a_grant_that_stays_below_the_threshold_rearms_only_the_depleted_notice(service_client, user):
    fund(user, COST)
    record(service_client, user, 1)  # 0: depleted (the low notice is then moot)

    grant = fund(user, COST).allocation.grants.get()  # 70: still below 100
    record(service_client, user, 1)

    assert told(user) == [(DEPLETED, f"{user.pk}:first"), (DEPLETED, f"{user.pk}:{grant.pk}")]
    assert UserCreditSource.objects.filter(user=user, remaining__gt=0).count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_parallel_deductions_crossing_both_thresholds_tell_each_once(user, settings):
    from credits.tests.test_concurrency import _service_client

    settings.CREDITS_LOW_BALANCE_THRESHOLD = 10 * COST
    fund(user, 20 * COST)

    statuses = run_concurrently(
        lambda _: _service_client().post(RECORD, usage_event(user), format="json").status_code, list(range(25))
    )

    assert sorted(statuses) == [201] * 20 + [402] * 5
    assert sorted(told(user)) == [(DEPLETED, f"{user.pk}:first"), (LOW, f"{user.pk}:first")]
