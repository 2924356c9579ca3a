"""Reads made ahead (`sql.reads_primed`): the Stripe inbox sends its handlers' first reads in its own
round trip, and their identical reads are answered from those rows, but only until another
statement reaches the database."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from billing_project import sql

pytestmark = pytest.mark.django_db

BY_NAME = "SELECT name FROM auth_group WHERE name = %s"


def test_a_read_made_ahead_is_answered_from_its_rows_without_a_query(django_assert_num_queries):
    Group.objects.create(name="editors")
    statements = [(BY_NAME, ["editors"]), (BY_NAME, ["writers"])]
    with transaction.atomic():
        results = sql.read_all(statements)
        with sql.reads_primed(statements, results), django_assert_num_queries(0):
            assert sql.read_all([(BY_NAME, ["writers"])]) == [[]]
            assert sql.read_all([(BY_NAME, ["editors"])]) == [[("editors",)]]


def test_a_read_not_made_ahead_goes_to_the_database():
    Group.objects.create(name="editors")
    statements = [(BY_NAME, ["editors"])]
    results = sql.read_all(statements)
    with sql.reads_primed(statements, results), CaptureQueriesContext(connection) as queries:
        # One of the two was not made ahead: both are read.
        assert sql.read_all([(BY_NAME, ["editors"]), (BY_NAME, ["writers"])]) == [[("editors",)], []]
    assert queries.captured_queries


def test_a_read_made_ahead_is_read_again_after_another_statement(django_assert_num_queries):
    statements = [(BY_NAME, ["writers"])]
    results = sql.read_all(statements)
    with sql.reads_primed(statements, results):
        Group.objects.create(name="writers")
        with django_assert_num_queries(1):
            assert sql.read_all(statements) == [[("writers",)]]


def test_each_read_made_ahead_answers_once(django_assert_num_queries):
    Group.objects.create(name="editors")
    statements = [(BY_NAME, ["editors"])]
    results = sql.read_all(statements)
    with sql.reads_primed(statements, results):
        with django_assert_num_queries(0):
            sql.read_all(statements)
        with django_assert_num_queries(1):
            assert sql.read_all(statements) == [[("editors",)]]


def test_reads_made_ahead_are_forgotten_when_the_block_ends(django_assert_num_queries):
    statements = [(BY_NAME, ["writers"])]
    with sql.reads_primed(statements, [[("writers",)]]):
        pass
    with django_assert_num_queries(1):
        assert sql.read_all(statements) == [[]]
