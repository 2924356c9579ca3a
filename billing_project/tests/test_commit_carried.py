"""The last statements of a transaction carry its COMMIT when their caller ends the outermost atomic
block with them (billing_project.sql's `commit_carried`, billing_project/postgresql): what the client
sends is read from libpq's trace of the protocol, what was committed from a second connection."""

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, ProgrammingError, connection, connections, transaction

from billing_project import sql
from billing_project.tests.protocol import queries_sent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ADDED = "INSERT INTO auth_group (name) SELECT %s"
# A membership of no user in no group: refused by its deferred foreign keys, at COMMIT.
DANGLING = "INSERT INTO auth_user_groups (user_id, group_id) SELECT %s, %s"


@pytest.fixture(autouse=True)
def no_groups():
    """Only the groups the test writes (the roles' groups come with the migrations)."""
    Group.objects.all().delete()


@pytest.fixture
def other():
    """A second connection, in autocommit: another worker."""
    second = connections.create_connection("default")
    yield second
    second.close()


def committed_groups(other) -> list[str]:
    with other.cursor() as cursor:
        cursor.execute("SELECT name FROM auth_group ORDER BY name")
        return [name for (name,) in cursor.fetchall()]


def test_the_last_statements_of_a_block_carry_its_commit_and_django_sends_none(other):
    callbacks = []

    def work():
        with transaction.atomic():
            Group.objects.filter(name="first").exists()
            transaction.on_commit(lambda: callbacks.append(committed_groups(other)))
            sql.execute_all([(ADDED, ["first"]), (ADDED, ["second"])], commit=True)

    sent = [query for query in queries_sent(work) if "PREPARE" not in query]

    assert len(sent) == 2
    assert sent[0].startswith('"BEGIN; SELECT 1 AS "a" FROM "auth_group"')
    assert sent[1].endswith('; COMMIT"')
    assert callbacks == [["first", "second"]]
    assert committed_groups(other) == ["first", "second"]


def test_reads_after_the_writes_answer_before_the_commit_they_carry():
    def work():
        with transaction.atomic():
            Group.objects.filter(name="first").exists()
            rows.extend(sql.written_then_read([(ADDED, ["first"])], [("SELECT name FROM auth_group", [])], commit=True))

    rows = []
    sent = queries_sent(work)

    assert rows == [[("first",)]]
    assert sent[-1].endswith('; COMMIT"')


def test_inside_an_outer_block_the_commit_stays_djangos(other):
    def work():
        with transaction.atomic():
            Group.objects.filter(name="first").exists()
            with transaction.atomic():
                sql.execute_all([(ADDED, ["inner"])], commit=True)
            assert committed_groups(other) == []
            sql.execute_all([(ADDED, ["outer"])])

    sent = queries_sent(work)

    assert not any("; COMMIT" in query for query in sent)
    assert sent[-1] == '"COMMIT"'
    assert committed_groups(other) == ["inner", "outer"]


def test_a_statement_after_the_carried_commit_is_refused_and_the_connection_serves_on(other):
    with pytest.raises(ProgrammingError, match="COMMIT was sent"), transaction.atomic():
        sql.execute_all([(ADDED, ["committed"])], commit=True)
        Group.objects.count()

    assert committed_groups(other) == ["committed"]
    with transaction.atomic():
        Group.objects.create(name="next")
    assert committed_groups(other) == ["committed", "next"]


def test_a_commit_refused_by_a_deferred_constraint_leaves_nothing_and_runs_no_callback(other):
    callbacks = []

    with pytest.raises(IntegrityError), transaction.atomic():
        transaction.on_commit(lambda: callbacks.append("ran"))
        sql.execute_all([(ADDED, ["kept?"]), (DANGLING, [10**9, 10**9])], commit=True)

    assert callbacks == []
    assert committed_groups(other) == []
    assert not connection.commit_sent
    with transaction.atomic():
        Group.objects.create(name="next")
    assert committed_groups(other) == ["next"]
