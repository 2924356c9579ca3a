"""A transaction's BEGIN travels with its first statement (billing_project/postgresql): what the
client sends is read from libpq's own trace of the protocol, and what the transaction holds is
seen from a second connection, as another worker would."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, connections, transaction

from billing_project.tests.protocol import queries_sent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class Rollback(Exception):
    pass


@pytest.fixture
def other():
    """A second connection, in autocommit: another worker."""
    second = connections.create_connection("default")
    yield second
    second.close()


def test_a_transactions_first_statement_carries_its_begin_and_no_round_trip_is_added():
    def work():
        with transaction.atomic():
            Group.objects.filter(name="a").exists()
            Group.objects.count()

    sent = queries_sent(work)

    assert len(sent) == 3
    assert sent[0].startswith('"BEGIN; SELECT 1 AS "a" FROM "auth_group"')
    assert sent[1].startswith('"SELECT COUNT(*)')
    assert sent[2] == '"COMMIT"'


def test_a_block_that_sends_nothing_sends_no_begin_or_commit():
    def work():
        with transaction.atomic():
            pass

    assert queries_sent(work) == []


def test_outside_a_block_a_statement_commits_at_once(other):
    def work():
        Group.objects.create(name="outside")

    sent = queries_sent(work)

    assert not any("BEGIN" in query for query in sent)
    with other.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM auth_group WHERE name = 'outside'")
        assert cursor.fetchone() == (1,)


def test_what_a_block_wrote_rolls_back_with_it_and_its_results_are_the_statements_own(other):
    with pytest.raises(Rollback), transaction.atomic():
        group = Group.objects.create(name="rolled back")  # its INSERT ... RETURNING is the first statement
        assert group.pk is not None
        assert Group.objects.filter(name="rolled back").count() == 1
        raise Rollback

    assert not Group.objects.filter(name="rolled back").exists()
    with other.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM auth_group WHERE name = 'rolled back'")
        assert cursor.fetchone() == (0,)


def test_a_lock_the_first_statement_takes_is_held_until_the_block_ends(other):
    user = get_user_model().objects.create_user(username="locked", password=None)
    lock_attempt = f"SELECT id FROM auth_user WHERE id = {user.pk} FOR UPDATE NOWAIT"

    with transaction.atomic():
        get_user_model().objects.select_for_update().get(pk=user.pk)
        with pytest.raises(DatabaseError, match="could not obtain lock"), other.cursor() as cursor:
            cursor.execute(lock_attempt)

    with other.cursor() as cursor:
        cursor.execute(lock_attempt)
        assert cursor.fetchone() == (user.pk,)


def test_executemany_and_a_server_side_cursor_inside_a_block_belong_to_its_transaction(other):
    with pytest.raises(Rollback), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO auth_group (name) VALUES (%s)", [("many 1",), ("many 2",)])
        # The iterator reads through a server-side cursor: it sees the block's own uncommitted rows.
        assert sorted(Group.objects.filter(name__startswith="many").values_list("name", flat=True).iterator()) == [
            "many 1",
            "many 2",
        ]
        with other.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM auth_group WHERE name LIKE 'many%'")
            assert cursor.fetchone() == (0,)
        raise Rollback

    assert not Group.objects.filter(name__startswith="many").exists()


def test_a_server_side_cursor_as_the_first_statement_begins_the_transaction_alone_first():
    Group.objects.create(name="streamed")

    def work():
        with transaction.atomic():
            assert list(Group.objects.values_list("name", flat=True).iterator()) == ["streamed"]

    sent = queries_sent(work)

    assert sent[0] == '"BEGIN"'
    assert sent[1].startswith('"" "DECLARE')
    assert sent[-1] == '"COMMIT"'
