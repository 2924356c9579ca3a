"""The statements the hot paths write out (billing_project.sql) are prepared once per PostgreSQL
connection and then sent by name (billing_project/postgresql): what the client sends is read from
libpq's trace of the protocol, what the server holds from pg_prepared_statements."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from billing_project import sql
from billing_project.postgresql import base
from billing_project.tests.protocol import queries_sent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BY_NAME = ("SELECT name FROM auth_group WHERE name = %s", ["editors"])
COUNTED = ("SELECT count(*) FROM auth_group WHERE name LIKE %s", ["edit%"])


class Rollback(Exception):
    pass


@pytest.fixture(autouse=True)
def new_connection():
    """A connection of its own: the names count from 1 on it."""
    connection.close()


@pytest.fixture
def groups(new_connection):
    Group.objects.create(name="editors")
    Group.objects.create(name="editing")


def prepared_on_server() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, statement FROM pg_prepared_statements")
        return dict(cursor.fetchall())


def test_a_statement_is_prepared_once_then_sent_by_name(groups):
    results = []
    sent = queries_sent(lambda: results.extend(sql.read_all([BY_NAME]) for _ in range(3)))

    assert sent == [
        '"PREPARE billing_1 AS SELECT name FROM auth_group WHERE name = $1"',
        *["\"EXECUTE billing_1('editors')\""] * 3,
    ]
    assert results == [[[("editors",)]]] * 3
    assert prepared_on_server() == {"billing_1": "PREPARE billing_1 AS SELECT name FROM auth_group WHERE name = $1"}


def test_several_statements_still_share_one_round_trip(groups):
    sql.read_all([BY_NAME, COUNTED])

    sent = queries_sent(lambda: sql.read_all([BY_NAME, COUNTED]))

    assert sent == ["\"EXECUTE billing_1('editors'); EXECUTE billing_2('edit%')\""]
    assert sql.read_all([BY_NAME, COUNTED]) == [[("editors",)], [(2,)]]


def test_the_query_log_and_execute_wrappers_see_the_statements_themselves(groups):
    seen = []

    def wrapper(execute, query, params, many, context):
        seen.append(str(query))
        return execute(query, params, many, context)

    with CaptureQueriesContext(connection) as logged, connection.execute_wrapper(wrapper):
        sql.read_all([BY_NAME, COUNTED])

    text = "SELECT name FROM auth_group WHERE name = %s; SELECT count(*) FROM auth_group WHERE name LIKE %s"
    assert seen == [text]
    assert [query["sql"] for query in logged.captured_queries] == [
        "SELECT name FROM auth_group WHERE name = 'editors'; SELECT count(*) FROM auth_group WHERE name LIKE 'edit%'"
    ]


def test_a_statement_prepared_in_a_transaction_rolled_back_stays_prepared(groups):
    with pytest.raises(Rollback), transaction.atomic():
        sql.read_all([BY_NAME])
        raise Rollback

    sent = queries_sent(lambda: sql.read_all([BY_NAME]))

    assert sent == ["\"EXECUTE billing_1('editors')\""]


def test_in_a_transaction_the_execute_carries_its_begin(groups):
    sql.read_all([BY_NAME])

    def work():
        with transaction.atomic():
            sql.read_all([BY_NAME])

    assert queries_sent(work) == ["\"BEGIN; EXECUTE billing_1('editors')\"", '"COMMIT"']


def test_a_new_connection_prepares_its_statements_again(groups):
    sql.read_all([BY_NAME])
    connection.close()

    sent = queries_sent(lambda: sql.read_all([BY_NAME]))

    assert sent[0] == '"PREPARE billing_1 AS SELECT name FROM auth_group WHERE name = $1"'
    assert sql.read_all([BY_NAME]) == [[("editors",)]]


def test_a_percent_sign_reaches_the_server_as_one(groups):
    statement = ("SELECT count(*) FROM auth_group WHERE name LIKE 'edit%%' AND name <> %s", ["editing"])

    assert sql.read_all([statement]) == [[(1,)]]
    assert sql.read_all([statement]) == [[(1,)]]
    assert "LIKE 'edit%' AND name <> $1" in prepared_on_server()["billing_1"]


def test_with_prepared_statements_off_the_text_is_sent(groups, settings):
    settings.DB_PREPARED_STATEMENTS = False

    sent = queries_sent(lambda: sql.read_all([BY_NAME]))

    assert sent == ["\"SELECT name FROM auth_group WHERE name = 'editors'\""]
    assert prepared_on_server() == {}


def test_past_the_limit_a_new_statement_is_sent_as_text(groups, monkeypatch):
    monkeypatch.setattr(base, "PREPARED_PER_CONNECTION", 1)
    sql.read_all([BY_NAME])

    sent = queries_sent(lambda: sql.read_all([BY_NAME, COUNTED]))

    assert sent == ["\"EXECUTE billing_1('editors'); SELECT count(*) FROM auth_group WHERE name LIKE 'edit%'\""]
    assert list(prepared_on_server()) == ["billing_1"]


def test_every_execution_is_planned_for_its_own_values(groups):
    for _ in range(8):
        sql.read_all([BY_NAME])

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('plan_cache_mode'), generic_plans FROM pg_prepared_statements")
        assert cursor.fetchall() == [("force_custom_plan", 0)]
