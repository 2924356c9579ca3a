"""Timestamps read from PostgreSQL are the instants stored, as UTC datetimes, loaded by psycopg's own
timestamptz loader where the connection's TimeZone is UTC, and by Django's elsewhere
(billing_project/postgresql)."""

import datetime

import psycopg
import pytest
from django.db import connection
from django.test.utils import override_settings
from psycopg.postgres import types
from psycopg.pq import Format

from subscriptions.tests.factories import SubscriptionFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

TIMESTAMPTZ = types["timestamptz"].oid
STORED = "2026-03-01 10:30:15.250001+05:30"
INSTANT = datetime.datetime(2026, 3, 1, 5, 0, 15, 250001, tzinfo=datetime.UTC)


def loaded(sql: str):
    with connection.cursor() as cursor:
        cursor.execute(sql)
        (value,) = cursor.fetchone()
        return value, cursor.cursor.adapters.get_loader(TIMESTAMPTZ, Format.TEXT)


def test_a_timestamp_is_the_instant_stored_in_utc_through_psycopgs_loader():
    value, loader_class = loaded(f"SELECT '{STORED}'::timestamptz")

    assert value == INSTANT
    assert value.tzinfo is datetime.UTC
    loader = loader_class(TIMESTAMPTZ, connection.connection)
    assert type(loader.load.__self__) is psycopg.adapters.get_loader(TIMESTAMPTZ, Format.TEXT)


def test_a_models_timestamps_read_back_as_written():
    subscription = SubscriptionFactory(current_period_start=INSTANT)

    subscription.refresh_from_db()

    assert subscription.current_period_start == INSTANT
    assert subscription.current_period_start.tzinfo is datetime.UTC
    assert subscription.created_at.tzinfo is datetime.UTC


def test_a_connection_in_another_time_zone_is_read_by_djangos_loader():
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Asia/Kolkata'")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            loader = cursor.cursor.adapters.get_loader(TIMESTAMPTZ, Format.TEXT)(TIMESTAMPTZ, connection.connection)
        assert "load" not in vars(loader)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")


@override_settings(USE_TZ=False)
def test_without_time_zones_each_cursor_is_given_djangos_naive_loader():
    value, loader_class = loaded(f"SELECT '{STORED}'::timestamptz")

    assert value == INSTANT.replace(tzinfo=None)
    assert loader_class.timezone is None
