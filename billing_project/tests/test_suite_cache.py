"""The test suite deletes only the cache entries it wrote: pointed at a Redis database a live server
also uses, it leaves that server's entries (throttle counters, cached reads) alone."""

import os

import pytest
from django.conf import settings
from django.core.cache import cache

from conftest import forget_test_cache


def test_the_run_keeps_its_cache_entries_under_a_prefix_of_its_own():
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")

    assert prefix.startswith(f"{settings.CACHE_KEY_PREFIX}-test-")
    assert os.environ["CACHE_KEY_PREFIX"] == prefix  # and so do the processes it starts


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL: the local-memory cache is the process's own")
def test_forgetting_the_test_cache_leaves_a_live_servers_entries_alone():
    redis = cache.client.get_client(write=True)
    live_key = f"{settings.CACHE_KEY_PREFIX}:1:throttle_coupon_ip:203.0.113.9"
    redis.set(live_key, 7)
    cache.set("written-by-this-test", 1)
    try:
        forget_test_cache()

        assert cache.get("written-by-this-test") is None
        assert redis.get(live_key) == b"7"
    finally:
        redis.delete(live_key)
