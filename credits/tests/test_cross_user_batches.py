"""A batch of usage over many users: groups of whole users, each one transaction whose round trips do not
grow with its users, the same outcomes a user would get alone, and a write the database refuses kept to
its own user."""

import contextlib
import random
import threading
import time
import uuid

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from billing_project.errors import DomainError
from conftest import run_concurrently
from credits.api.events import usage_event_parse
from credits.models import CreditDeductionLedger, TokenUsageLedger, UserCreditBalance
from credits.services import pricing_catalog_seed, usage_record, usage_record_batch
from credits.services.ledger import ledger_figures
from credits.services.usage import BATCH_GROUP_EVENTS
from credits.tests.conftest import fund, usage_event

BATCH = "/api/v1/usage/record-batch/"


def users_funded(django_user_model, count: int, credits: int) -> list:
    users = [
        django_user_model.objects.create_user(
            username=f"batch{index}", email=f"batch{index}@example.com", password="unused-password"
        )
        for index in range(count)
    ]
    for user in users:
        fund(user, credits)
    return users


def parsed(user, **overrides):
    return usage_event_parse(usage_event(user, **overrides))[0]


def in_thread(work) -> threading.Thread:
    """`work` started in a thread of its own, with its own database connection (closed at the end)."""

    def run():
        try:
            work()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@contextlib.contextmanager
def held_open(work):
    """`work` done in a transaction of another thread, left open until the block ends, then committed."""
    done, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            work()
            done.set()
            release.wait(30)

    holder = in_thread(hold)
    assert done.wait(30)
    try:
        yield
    finally:
        release.set()
        holder.join()


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.usefixtures("price_catalog")
def test_a_batch_over_a_group_of_users_costs_the_round_trips_of_a_batch_over_one(django_user_model):
    group_users = BATCH_GROUP_EVENTS // 2
    users = users_funded(django_user_model, 1 + group_users, 10_000)
    usage_record_batch(events=[parsed(users[0])])  # the pricing book and the connection, read once

    with CaptureQueriesContext(connection) as one_user:
        usage_record_batch(events=[parsed(users[0]), parsed(users[0])])
    with CaptureQueriesContext(connection) as many_users:
        usage_record_batch(events=[parsed(user) for user in users[1:] for _ in range(2)])

    assert len(many_users) == len(one_user)
    assert TokenUsageLedger.objects.count() == 1 + 2 + 2 * group_users
    assert set(UserCreditBalance.objects.filter(user__in=users[1:]).values_list("amount", flat=True)) == {10_000 - 140}
    assert all(figures.problems == [] for figures in ledger_figures(user_ids=[user.pk for user in users]))


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.usefixtures("price_catalog")
def test_a_long_batch_is_recorded_in_groups_of_whole_users(django_user_model):
    group_users = BATCH_GROUP_EVENTS // 2
    spent = 70 * (3 + BATCH_GROUP_EVENTS + 10)  # by the busy user
    funds = 2 * spent  # well above the low-balance alert
    users = users_funded(django_user_model, 1 + 3 * group_users, funds)
    busy, others = users[0], users[1:]
    usage_record_batch(events=[parsed(busy)])  # the pricing book and the connection, read once
    with CaptureQueriesContext(connection) as one_user:
        usage_record_batch(events=[parsed(busy), parsed(busy)])

    # when a batch spans three groups' worth of users, and another sends one user more than a group
    with CaptureQueriesContext(connection) as three_groups:
        outcomes = usage_record_batch(events=[parsed(user) for user in others for _ in range(2)])
    with CaptureQueriesContext(connection) as one_busy_user:
        busy_outcomes = usage_record_batch(events=[parsed(busy) for _ in range(BATCH_GROUP_EVENTS + 10)])

    # then the first costs three groups' round trips, the busy user's events are never split, and all add up
    assert len(three_groups) == 3 * len(one_user)
    assert len(one_busy_user) == len(one_user)
    assert [outcome.status_code for outcome in outcomes + busy_outcomes] == [201] * (
        6 * group_users + BATCH_GROUP_EVENTS + 10
    )
    assert [outcome.usage.user_id for outcome in outcomes] == [user.pk for user in others for _ in range(2)]
    assert set(UserCreditBalance.objects.filter(user__in=others).values_list("amount", flat=True)) == {funds - 140}
    assert UserCreditBalance.objects.get(user=busy).amount == funds - spent
    assert all(figures.problems == [] for figures in ledger_figures(user_ids=[user.pk for user in users]))


@pytest.mark.django_db
@pytest.mark.usefixtures("price_catalog")
def test_each_user_of_a_batch_gets_what_they_would_get_alone(service_client, django_user_model):
    # given funded users, a user never seen by the credits engine, an unknown id and a recorded request
    rich, poor, repeat = users_funded(django_user_model, 3, 1_000)
    newcomer = django_user_model.objects.create_user(
        username="newcomer", email="new@example.com", password="unused-password"
    )
    recorded = usage_event(repeat)
    service_client.post("/api/v1/usage/record/", recorded, format="json")
    events = [
        usage_event(rich),
        usage_event(newcomer),
        {**usage_event(rich), "user_id": 10**9},
        recorded,
        usage_event(poor, input_tokens=1_000_000, output_tokens=1_000_000),
        usage_event(rich),
        usage_event(poor),
    ]

    response = service_client.post(BATCH, {"events": events}, format="json")

    results = response.json()["results"]
    assert [result["status"] for result in results] == [201, 402, 422, 200, 402, 201, 201]
    assert [result.get("code") for result in results[1:5]] == [
        "insufficient_credits",
        "unknown_user",
        None,
        "insufficient_credits",
    ]
    assert [results[0]["result"]["balance_after"], results[5]["result"]["balance_after"]] == [930, 860]
    assert results[3]["result"]["balance_after"] == 930
    assert not UserCreditBalance.objects.filter(user=newcomer).exists()  # a refused first use writes nothing
    assert dict(UserCreditBalance.objects.filter(user__in=[rich, poor, repeat]).values_list("user", "amount")) == {
        rich.pk: 860,
        poor.pk: 930,
        repeat.pk: 930,
    }


@pytest.mark.django_db
@pytest.mark.usefixtures("price_catalog")
def test_a_request_id_sent_for_two_users_in_one_batch_is_recorded_for_the_first_only(service_client, user, other_user):
    fund(user, 1_000)
    fund(other_user, 1_000)
    request_id = str(uuid.uuid4())

    response = service_client.post(
        BATCH,
        {"events": [usage_event(other_user, request_id=request_id), usage_event(user, request_id=request_id)]},
        format="json",
    )

    first, second = sorted([user, other_user], key=lambda each: each.pk)
    statuses = {result["status"] for result in response.json()["results"]}
    assert statuses == {201, 409}
    assert TokenUsageLedger.objects.get(request_id=request_id).user_id == first.pk
    assert UserCreditBalance.objects.get(user=second).amount == 1_000


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_request_id_committed_by_another_user_during_the_batch_fails_only_that_users_event(
    service_client, django_user_model
):
    # given a request recorded for one user in a transaction that stays open
    pricing_catalog_seed()
    owner, sender, bystander = users_funded(django_user_model, 3, 1_000)
    request_id = uuid.uuid4()
    answers = []

    def send_batch():
        events = [usage_event(sender, request_id=str(request_id)), usage_event(bystander)]
        answers.append(service_client.post(BATCH, {"events": events}, format="json"))

    with held_open(lambda: usage_record(event=parsed(owner, request_id=str(request_id)))):
        # when a batch sends the same request_id for another user, with a third user's event, and its
        # write has to wait for the open transaction, which then commits
        sending = in_thread(send_batch)
        deadline = time.monotonic() + 30
        while not _a_statement_waits_for_a_lock() and time.monotonic() < deadline:
            time.sleep(0.05)
    sending.join()

    # then only that event is refused, as a conflict; the other user's event is recorded
    (response,) = answers
    assert response.status_code == 200
    results = response.json()["results"]
    assert [result["status"] for result in results] == [409, 201]
    assert results[0]["code"] == "request_id_conflict"
    assert TokenUsageLedger.objects.get(request_id=request_id).user_id == owner.pk
    assert dict(UserCreditBalance.objects.values_list("user", "amount")) == {
        owner.pk: 930,
        sender.pk: 1_000,
        bystander.pk: 930,
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_batch_records_its_other_users_while_some_balances_are_held_elsewhere(django_user_model):
    # given two users whose balances another transaction holds locked
    pricing_catalog_seed()
    users = users_funded(django_user_model, 4, 1_000)
    held, others = users[:2], users[2:]
    outcomes = []

    def record_batch():
        outcomes.extend(usage_record_batch(events=[parsed(user) for user in users]))

    with held_open(lambda: list(UserCreditBalance.objects.select_for_update().filter(user__in=held))):
        # when a batch over those users and two others is recorded meanwhile
        batch = in_thread(record_batch)
        deadline = time.monotonic() + 10
        while TokenUsageLedger.objects.filter(user__in=others).count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        recorded_while_held = {
            "others": TokenUsageLedger.objects.filter(user__in=others).count(),
            "held": TokenUsageLedger.objects.filter(user__in=held).count(),
        }
    batch.join()

    # then the other users' events are committed without waiting, the held users' once the lock is gone
    assert recorded_while_held == {"others": 2, "held": 0}
    assert [outcome.status_code for outcome in outcomes] == [201] * 4
    assert [outcome.usage.user_id for outcome in outcomes] == [user.pk for user in users]
    assert set(UserCreditBalance.objects.values_list("amount", flat=True)) == {930}
    assert all(figures.problems == [] for figures in ledger_figures(user_ids=[user.pk for user in users]))


def _status(outcome) -> int:
    return outcome.status if isinstance(outcome, DomainError) else outcome.status_code


def _a_statement_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_batches_over_overlapping_users_neither_deadlock_nor_overspend(django_user_model):
    # given 12 users who can each pay for 10 requests of 70 credits
    pricing_catalog_seed()
    users = users_funded(django_user_model, 12, 700)
    rng = random.Random(7)
    batches = [[rng.choice(users) for _ in range(size)] for size in (30, 120) * 4]

    # when 8 threads each record a batch of 30 or 120 events (groups of users) over those users
    outcomes = run_concurrently(lambda batch: usage_record_batch(events=[parsed(user) for user in batch]), batches)

    # then no batch fails, every user spent at most what they had, and the ledger adds up
    assert not [outcome for outcome in outcomes if isinstance(outcome, Exception)], outcomes
    statuses = [_status(outcome) for batch in outcomes for outcome in batch]
    assert set(statuses) <= {201, 402}
    for user in users:
        sent = sum(each.pk == user.pk for batch in batches for each in batch)
        recorded = CreditDeductionLedger.objects.filter(user=user).count()
        assert recorded == min(sent, 10)
        assert UserCreditBalance.objects.get(user=user).amount == 700 - 70 * recorded
    assert statuses.count(201) == TokenUsageLedger.objects.count()
    assert all(figures.problems == [] for figures in ledger_figures(user_ids=[user.pk for user in users]))
