"""A usage record's and a batch's last write carries its transaction's COMMIT (a round trip fewer),
unless balance alerts are written after it: what the client sends is read from libpq's trace of the
protocol, what was committed from a second connection."""

import pytest
from django.db import connections

from billing_project.models import Notification
from billing_project.tests.protocol import queries_sent
from credits.api.events import usage_event_parse
from credits.services import usage_record, usage_record_batch
from credits.tests.conftest import fund, usage_event

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("price_catalog")]


@pytest.fixture
def other():
    """A second connection, in autocommit: another worker."""
    second = connections.create_connection("default")
    yield second
    second.close()


def parsed(user, **overrides):
    return usage_event_parse(usage_event(user, **overrides))[0]


def committed_balance(other, user) -> int:
    with other.cursor() as cursor:
        cursor.execute("SELECT amount FROM credits_usercreditbalance WHERE user_id = %s", [user.pk])
        return cursor.fetchone()[0]


def without_prepares(sent: list[str]) -> list[str]:
    return [query for query in sent if "PREPARE" not in query]


def test_a_usage_record_sends_its_commit_with_its_write(user, other):
    fund(user, 10_000)
    usage_record(event=parsed(user))  # the pricing book and the connection's statements, made once
    results = []

    sent = without_prepares(queries_sent(lambda: results.append(usage_record(event=parsed(user)))))

    assert results[0].status_code == 201
    assert len(sent) == 2
    assert sent[-1].endswith('; COMMIT"')
    assert committed_balance(other, user) == 10_000 - 2 * 70


def test_a_batch_over_many_users_sends_each_groups_commit_with_its_write(django_user_model, other):
    users = [
        django_user_model.objects.create_user(username=f"user{index}", email=f"user{index}@example.com")
        for index in range(3)
    ]
    for user in users:
        fund(user, 10_000)
    usage_record_batch(events=[parsed(user) for user in users])  # the statements of this shape, made once
    outcomes = []

    sent = without_prepares(
        queries_sent(lambda: outcomes.extend(usage_record_batch(events=[parsed(user) for user in users])))
    )

    assert [outcome.status_code for outcome in outcomes] == [201, 201, 201]
    assert len(sent) == 2
    assert sent[-1].endswith('; COMMIT"')
    assert [committed_balance(other, user) for user in users] == [10_000 - 2 * 70] * 3


def test_a_record_that_crosses_an_alert_threshold_writes_the_alert_then_commits(user, other):
    fund(user, 300)
    usage_record(event=parsed(user))  # the pricing book and the connection's statements, made once

    sent = without_prepares(queries_sent(lambda: usage_record(event=parsed(user))))

    assert not any(query.endswith('; COMMIT"') for query in sent)
    assert '"COMMIT"' in sent
    assert committed_balance(other, user) == 300 - 2 * 70
    assert Notification.objects.filter(user=user).count() == 1
