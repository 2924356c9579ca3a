"""A worker's persistent PostgreSQL connection is checked (Django's `SELECT 1` before a request's
first query) only once it has been idle DB_HEALTH_CHECK_IDLE_SECONDS (billing_project/postgresql).

`close_old_connections` is what Django runs at the start and the end of every request (and Celery
task); the tests call it where a request would begin and end."""

import pytest
from django.db import DatabaseError, close_old_connections, connection, connections

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def health_checks(monkeypatch):
    """How many times the connection was checked; each check still runs."""
    checks = []
    check = connection.is_usable

    def counted():
        checks.append(1)
        return check()

    monkeypatch.setattr(connection, "is_usable", counted)
    return checks


def request_querying() -> int:
    """One request that queries the database: the backend process that answered it."""
    close_old_connections()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]
    finally:
        close_old_connections()


def backend_terminate(pid: int) -> None:
    """The server drops that connection (a restart, an idle timeout, a proxy), from another session."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


def test_a_connection_used_a_moment_ago_serves_the_next_request_unchecked(settings, health_checks):
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 60
    first = request_querying()

    second = request_querying()

    assert second == first
    assert health_checks == []


def test_a_connection_idle_longer_than_the_setting_is_checked_before_the_first_query(settings, health_checks):
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 0
    first = request_querying()

    second = request_querying()

    assert second == first
    assert health_checks == [1]


def test_a_connection_dropped_while_idle_is_replaced_before_the_request_queries(settings, health_checks):
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 0
    dropped = request_querying()
    backend_terminate(dropped)

    replaced = request_querying()

    assert replaced != dropped
    assert health_checks == [1]


def test_a_connection_dropped_under_a_busy_worker_fails_one_request_and_the_next_reconnects(settings, health_checks):
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 60
    dropped = request_querying()
    backend_terminate(dropped)

    with pytest.raises(DatabaseError):
        request_querying()
    replaced = request_querying()

    assert replaced != dropped
