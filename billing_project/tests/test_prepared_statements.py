"""The INSERTs the hot paths write out (billing_project.sql) are prepared once per PostgreSQL
connection and then sent by name, with the UPDATEs their callers let the connection plan once;
reads and other UPDATEs are sent as text (billing_project/postgresql): what the client sends is
read from libpq's trace of the protocol, what the server holds from pg_prepared_statements."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from billing_project import sql
from billing_project.postgresql import base
from billing_project.tests.protocol import queries_sent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ADDED = "INSERT INTO auth_group (name) SELECT %s"
BY_NAME = ("SELECT name FROM auth_group WHERE name = %s", ["editors"])
RENAMED = ("UPDATE auth_group SET name = %s WHERE name = %s", ["writers", "editors"])


class Rollback(Exception):
    pass


@pytest.fixture(autouse=True)
def new_connection():
    """A connection of its own (the names count from 1 on it), and only the groups the test writes
    (the roles' groups come with the migrations)."""
    Group.objects.all().delete()
    connection.close()


def group_add(name: str) -> None:
    sql.execute_all([(ADDED, [name])])


def group_names() -> list[str]:
    return sorted(Group.objects.values_list("name", flat=True))


def prepared_on_server() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, statement FROM pg_prepared_statements")
        return dict(cursor.fetchall())


def test_an_insert_is_prepared_once_then_sent_by_name():
    sent = queries_sent(lambda: [group_add(name) for name in ("editors", "editing", "writers")])

    assert sent == [
        '"PREPARE billing_1 AS INSERT INTO auth_group (name) SELECT $1"',
        "\"EXECUTE billing_1('editors')\"",
        "\"EXECUTE billing_1('editing')\"",
        "\"EXECUTE billing_1('writers')\"",
    ]
    assert group_names() == ["editing", "editors", "writers"]
    assert prepared_on_server() == {"billing_1": "PREPARE billing_1 AS INSERT INTO auth_group (name) SELECT $1"}


def test_inserts_written_together_are_one_prepared_statement():
    def both(first: str, second: str):
        sql.execute_all([(ADDED, [first]), (ADDED, [second])])

    both("editors", "editing")
    sent = queries_sent(lambda: both("writers", "readers"))

    assert sent == ["\"EXECUTE billing_1('writers', 'readers')\""]
    assert group_names() == ["editing", "editors", "readers", "writers"]


def test_a_read_is_sent_as_text_and_planned_for_its_values():
    group_add("editors")

    sent = queries_sent(lambda: [sql.read_all([BY_NAME]) for _ in range(2)])

    assert sent == ["\"SELECT name FROM auth_group WHERE name = 'editors'\""] * 2
    assert prepared_on_server() == {"billing_1": "PREPARE billing_1 AS INSERT INTO auth_group (name) SELECT $1"}


def test_writes_with_an_update_among_them_are_sent_as_text():
    group_add("editors")

    sent = queries_sent(lambda: sql.execute_all([(ADDED, ["editing"]), RENAMED]))

    assert sent == [
        "\"WITH w0 AS (INSERT INTO auth_group (name) SELECT 'editing') "
        "UPDATE auth_group SET name = 'writers' WHERE name = 'editors'\""
    ]
    assert group_names() == ["editing", "writers"]


def test_writes_whose_update_is_planned_once_are_one_prepared_statement():
    group_add("editors")
    group = Group.objects.get(name="editors")

    def renamed_with_one_added(added: str, new_name: str):
        group.name = new_name
        sql.execute_all([(ADDED, [added]), sql.update(group, ["name"], planned_once=True)])

    first = queries_sent(lambda: renamed_with_one_added("editing", "writers"))
    second = queries_sent(lambda: renamed_with_one_added("reading", "authors"))

    assert first == [
        '"PREPARE billing_2 AS WITH w0 AS (INSERT INTO auth_group (name) SELECT $1) '
        'UPDATE "auth_group" SET "name" = $2 WHERE "id" = $3"',
        f"\"EXECUTE billing_2('editing', 'writers', {group.pk})\"",
    ]
    assert second == [f"\"EXECUTE billing_2('reading', 'authors', {group.pk})\""]
    assert group_names() == ["authors", "editing", "reading"]


def test_an_update_not_planned_once_is_sent_as_text_planned_for_its_values():
    group_add("editors")
    group = Group.objects.get(name="editors")
    group.name = "writers"

    sent = queries_sent(lambda: sql.execute_all([sql.update(group, ["name"])]))

    assert sent == [f'"UPDATE "auth_group" SET "name" = \'writers\' WHERE "id" = {group.pk}"']


def test_a_read_and_a_prepared_insert_still_share_one_round_trip():
    group_add("editors")

    sent = queries_sent(lambda: sql.written_then_read([(ADDED, ["editing"])], [BY_NAME]))

    assert sent == ["\"EXECUTE billing_1('editing'); SELECT name FROM auth_group WHERE name = 'editors'\""]


def test_the_query_log_and_execute_wrappers_see_the_statements_themselves():
    group_add("editors")
    seen = []

    def wrapper(execute, query, params, many, context):
        seen.append(str(query))
        return execute(query, params, many, context)

    with CaptureQueriesContext(connection) as logged, connection.execute_wrapper(wrapper):
        sql.written_then_read([(ADDED, ["editing"])], [BY_NAME])

    assert seen == ["INSERT INTO auth_group (name) SELECT %s; SELECT name FROM auth_group WHERE name = %s"]
    assert [query["sql"] for query in logged.captured_queries] == [
        "INSERT INTO auth_group (name) SELECT 'editing'; SELECT name FROM auth_group WHERE name = 'editors'"
    ]


def test_a_statement_prepared_in_a_transaction_rolled_back_stays_prepared():
    with pytest.raises(Rollback), transaction.atomic():
        group_add("editors")
        raise Rollback

    sent = queries_sent(lambda: group_add("editing"))

    assert sent == ["\"EXECUTE billing_1('editing')\""]
    assert group_names() == ["editing"]


def test_in_a_transaction_the_execute_carries_its_begin():
    group_add("editors")

    def work():
        with transaction.atomic():
            group_add("editing")

    assert queries_sent(work) == ["\"BEGIN; EXECUTE billing_1('editing')\"", '"COMMIT"']


def test_a_new_connection_prepares_its_statements_again():
    group_add("editors")
    connection.close()

    sent = queries_sent(lambda: group_add("editing"))

    assert sent[0] == '"PREPARE billing_1 AS INSERT INTO auth_group (name) SELECT $1"'
    assert group_names() == ["editing", "editors"]


def test_a_percent_sign_reaches_the_server_as_one():
    statement = ("INSERT INTO auth_group (name) SELECT %s || '%%'", ["editors"])

    sql.execute_all([statement])

    assert group_names() == ["editors%"]
    assert "SELECT $1 || '%'" in prepared_on_server()["billing_1"]


def test_with_prepared_statements_off_the_text_is_sent(settings):
    settings.DB_PREPARED_STATEMENTS = False

    sent = queries_sent(lambda: group_add("editors"))

    assert sent == ["\"INSERT INTO auth_group (name) SELECT 'editors'\""]
    assert prepared_on_server() == {}


def test_past_the_limit_a_new_statement_is_sent_as_text(monkeypatch):
    monkeypatch.setattr(base, "PREPARED_PER_CONNECTION", 1)
    group_add("editors")

    sent = queries_sent(lambda: sql.execute_all([(ADDED + " || '2'", ["editing"])]))

    assert sent == ["\"INSERT INTO auth_group (name) SELECT 'editing' || '2'\""]
    assert list(prepared_on_server()) == ["billing_1"]


def test_an_insert_is_planned_once_under_the_servers_own_plan_cache_mode():
    """The connection sets no plan cache mode: the server's default, which also plans its own
    foreign-key checks once per connection instead of at every written row."""
    for index in range(8):
        group_add(f"group {index}")

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('plan_cache_mode'), generic_plans > 0 FROM pg_prepared_statements")
        assert cursor.fetchall() == [("auto", True)]
