"""Cache writes registered for after a commit are made once it has committed, dropped with the
savepoint or transaction they belong to, and gathered in one Redis command where they are dropped
together (billing_project.cache_writes), against a real redis-server."""

import pytest
from django.core.cache import caches
from django.db import transaction

from billing_project.cache_writes import cache_set_on_commit
from billing_project.tests.test_cache_breaker import breaker_cache, redis_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


class RolledBack(Exception):
    pass


def commands_counted(cache) -> dict:
    """Redis's commands since the counts were reset: the calls of each."""
    stats = cache.client.get_client(write=True).info("commandstats")
    return {name.removeprefix("cmdstat_"): each["calls"] for name, each in stats.items()}


@pytest.fixture
def cache(breaker_cache):  # noqa: F811 (the fixture)
    breaker_cache.set_many({"warm": 0}, timeout=60)  # the script is loaded on first use
    breaker_cache.client.get_client(write=True).config_resetstat()
    return breaker_cache


def test_the_writes_of_one_transaction_reach_redis_in_one_command_each_with_its_expiry(cache):
    with transaction.atomic():
        cache_set_on_commit({"generation:1": "a", "generation:2": "a"}, timeout=60)
        cache_set_on_commit({"answer": {"status": "processed"}}, timeout=600)
        assert cache.get_many(["generation:1", "answer"]) == {}

    assert cache.get_many(["generation:1", "generation:2", "answer"]) == {
        "generation:1": "a",
        "generation:2": "a",
        "answer": {"status": "processed"},
    }
    assert 55_000 < cache.pttl("generation:1") <= 60_000
    assert 595_000 < cache.pttl("answer") <= 600_000
    assert commands_counted(cache)["evalsha"] == 1


def test_a_write_inside_a_savepoint_rolled_back_is_dropped_and_the_one_before_is_made(cache):
    with transaction.atomic():
        cache_set_on_commit({"kept": 1}, timeout=60)
        with pytest.raises(RolledBack), transaction.atomic():
            cache_set_on_commit({"dropped": 2}, timeout=60)
            raise RolledBack

    assert cache.get_many(["kept", "dropped"]) == {"kept": 1}


def test_a_write_before_a_savepoint_rolled_back_is_kept_though_a_later_write_joined_it(cache):
    with transaction.atomic():
        with pytest.raises(RolledBack), transaction.atomic():
            cache_set_on_commit({"dropped": 1}, timeout=60)
            raise RolledBack
        cache_set_on_commit({"kept": 2}, timeout=60)
        with transaction.atomic():
            cache_set_on_commit({"inside": 3}, timeout=60)

    assert cache.get_many(["dropped", "kept", "inside"]) == {"kept": 2, "inside": 3}
    assert commands_counted(cache)["evalsha"] == 2


def test_a_write_after_its_savepoint_was_released_joins_the_write_made_inside_it(cache):
    with transaction.atomic():
        with transaction.atomic():
            cache_set_on_commit({"inside": 1}, timeout=60)
        cache_set_on_commit({"after": 2}, timeout=60)

    assert cache.get_many(["inside", "after"]) == {"inside": 1, "after": 2}
    assert commands_counted(cache)["evalsha"] == 1


def test_nothing_is_written_when_the_transaction_rolls_back(cache):
    with pytest.raises(RolledBack), transaction.atomic():
        cache_set_on_commit({"dropped": 1}, timeout=60)
        raise RolledBack

    with transaction.atomic():
        cache_set_on_commit({"next": 2}, timeout=60)

    assert cache.get_many(["dropped", "next"]) == {"next": 2}


def test_outside_a_transaction_the_write_is_made_at_once(cache):
    cache_set_on_commit({"now": 1}, timeout=60)

    assert cache.get("now") == 1


def test_a_cache_without_one_command_for_many_expiries_gets_one_set_many_per_expiry(settings):
    settings.CACHES = {**settings.CACHES, "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with transaction.atomic():
        cache_set_on_commit({"short": 1}, timeout=60)
        cache_set_on_commit({"long": 2}, timeout=600)

    assert caches["default"].get_many(["short", "long"]) == {"short": 1, "long": 2}


def test_a_write_in_a_captured_block_is_made_by_the_capture_though_it_joined_an_earlier_write(
    cache, django_capture_on_commit_callbacks
):
    with pytest.raises(RolledBack), transaction.atomic():
        cache_set_on_commit({"earlier": 1}, timeout=60)
        with django_capture_on_commit_callbacks(execute=True):
            cache_set_on_commit({"captured": 2}, timeout=60)

        assert cache.get_many(["earlier", "captured"]) == {"captured": 2}
        raise RolledBack

    assert cache.get_many(["earlier", "captured"]) == {"captured": 2}
