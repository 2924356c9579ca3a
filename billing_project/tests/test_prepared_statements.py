"""The statements the hot paths write out (billing_project.sql) are prepared once per PostgreSQL
connection, with one plan made then with seq scans off, and then sent by name
(billing_project/postgresql): what the client sends is read from libpq's trace of the protocol,
what the server holds from pg_prepared_statements."""

import pytest
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, transaction
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


def prepare(name: str, statement: str, arguments: int) -> str:
    """What the connection sends to prepare `statement` as `name`: its plan is made at once."""
    nulls = ", ".join(["NULL"] * arguments)
    made = f"EXPLAIN (FORMAT JSON) EXECUTE {name}({nulls})"
    return f'"SET enable_seqscan = off; PREPARE {name} AS {statement}; {made}; RESET enable_seqscan"'


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
        prepare("billing_1", "INSERT INTO auth_group (name) SELECT $1", 1),
        "\"EXECUTE billing_1('editors')\"",
        "\"EXECUTE billing_1('editing')\"",
        "\"EXECUTE billing_1('writers')\"",
    ]
    assert group_names() == ["editing", "editors", "writers"]
    assert list(prepared_on_server()) == ["billing_1"]


def test_inserts_written_together_are_one_prepared_statement():
    def both(first: str, second: str):
        sql.execute_all([(ADDED, [first]), (ADDED, [second])])

    both("editors", "editing")
    sent = queries_sent(lambda: both("writers", "readers"))

    assert sent == ["\"EXECUTE billing_1('writers', 'readers')\""]
    assert group_names() == ["editing", "editors", "readers", "writers"]


def test_a_read_is_prepared_once_then_sent_by_name():
    group_add("editors")

    sent = queries_sent(lambda: [sql.read_all([BY_NAME]) for _ in range(2)])

    assert sent == [
        prepare("billing_2", "SELECT name FROM auth_group WHERE name = $1", 1),
        "\"EXECUTE billing_2('editors')\"",
        "\"EXECUTE billing_2('editors')\"",
    ]
    assert sql.read_all([BY_NAME]) == [[("editors",)]]


def test_writes_with_an_update_among_them_are_one_prepared_statement():
    group_add("editors")
    group = Group.objects.get(name="editors")

    def renamed_with_one_added(added: str, new_name: str):
        group.name = new_name
        sql.execute_all([(ADDED, [added]), sql.update(group, ["name"])])

    first = queries_sent(lambda: renamed_with_one_added("editing", "writers"))
    second = queries_sent(lambda: renamed_with_one_added("reading", "authors"))

    assert first == [
        prepare(
            "billing_2",
            'WITH w0 AS (INSERT INTO auth_group (name) SELECT $1) UPDATE "auth_group" SET "name" = $2 WHERE "id" = $3',
            3,
        ),
        f"\"EXECUTE billing_2('editing', 'writers', {group.pk})\"",
    ]
    assert second == [f"\"EXECUTE billing_2('reading', 'authors', {group.pk})\""]
    assert group_names() == ["authors", "editing", "reading"]


def test_a_read_and_a_prepared_insert_still_share_one_round_trip():
    group_add("editors")
    sql.read_all([BY_NAME])

    sent = queries_sent(lambda: sql.written_then_read([(ADDED, ["editing"])], [BY_NAME]))

    assert sent == ["\"EXECUTE billing_1('editing'); EXECUTE billing_2('editors')\""]


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

    assert sent[0] == prepare("billing_1", "INSERT INTO auth_group (name) SELECT $1", 1)
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


def test_a_statement_is_planned_once_for_all_its_executions():
    for index in range(8):
        group_add(f"group {index}")
    sql.read_all([BY_NAME])

    with connection.cursor() as cursor:
        cursor.execute("SELECT name, generic_plans > 0, custom_plans FROM pg_prepared_statements ORDER BY name")
        assert cursor.fetchall() == [("billing_1", True, 0), ("billing_2", True, 0)]


def test_a_read_prepared_while_its_table_was_small_reads_through_its_index_as_it_grows():
    """Planned for its size then, the read of a table of one row would be a seq scan, and stay one."""
    group_add("editors")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE auth_group")
    sql.read_all([BY_NAME])
    Group.objects.bulk_create(Group(name=f"group {index}") for index in range(5000))

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN EXECUTE billing_2('group 4000')")
        plan = "\n".join(line for (line,) in cursor.fetchall())

    assert "Index" in plan and "Seq Scan" not in plan
    assert sql.read_all([("SELECT name FROM auth_group WHERE name = %s", ["group 4000"])]) == [[("group 4000",)]]


def test_a_read_whose_one_plan_would_read_the_whole_table_is_planned_for_its_values():
    """Only a partial index (of the charge ids that are not empty) serves it: a plan made for any
    value could not use it."""
    by_charge = "SELECT id FROM payments_payment WHERE stripe_charge_id = %s"

    sent = queries_sent(lambda: [sql.read_all([(by_charge, ["ch_1"])]) for _ in range(2)])

    assert sent == [
        prepare("billing_1", "SELECT id FROM payments_payment WHERE stripe_charge_id = $1", 1),
        '"DEALLOCATE billing_1"',
        "\"SELECT id FROM payments_payment WHERE stripe_charge_id = 'ch_1'\"",
        "\"SELECT id FROM payments_payment WHERE stripe_charge_id = 'ch_1'\"",
    ]
    assert prepared_on_server() == {}


def test_a_read_no_index_serves_is_planned_for_its_values():
    by_length = "SELECT name FROM auth_group WHERE length(name) = %s"
    group_add("editors")

    sent = queries_sent(lambda: sql.read_all([(by_length, [7])]))

    assert sent == [
        prepare("billing_2", "SELECT name FROM auth_group WHERE length(name) = $1", 1),
        '"DEALLOCATE billing_2"',
        '"SELECT name FROM auth_group WHERE length(name) = 7"',
    ]


def test_a_statement_that_fails_once_prepared_leaves_its_name_taken_and_the_session_as_it_was():
    """Its plan fails to be made (a NULL where the domain refuses one): the PREPARE stood, so the
    next statement takes the next name."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE DOMAIN group_name AS varchar(150) NOT NULL")
    try:
        with pytest.raises(DatabaseError):
            sql.read_all([("SELECT name FROM auth_group WHERE name = %s::group_name", ["editors"])])

        sent = queries_sent(lambda: group_add("editors"))

        assert sent[0] == prepare("billing_2", "INSERT INTO auth_group (name) SELECT $1", 1)
        assert group_names() == ["editors"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('enable_seqscan'), current_setting('plan_cache_mode')")
            assert cursor.fetchall() == [("on", "force_generic_plan")]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")
            cursor.execute("DROP DOMAIN group_name")
        connection.close()
