"""Django closes every cache at the end of each request; the project skips that call when closing its
caches does nothing, and keeps it when one of them closes something."""

import pytest
from django.core.cache import caches

from billing_project.cache_breaker import cache_closes_anything

REDIS = {"BACKEND": "billing_project.cache_breaker.CircuitBreakerRedisCache", "LOCATION": "redis://127.0.0.1:6379/0"}


def test_the_end_of_a_request_leaves_the_configured_caches_open(client, monkeypatch):
    closed = []
    monkeypatch.setattr(caches, "close_all", lambda: closed.append(True))

    assert client.get("/health").status_code == 200
    assert closed == []


@pytest.mark.parametrize(
    "options",
    [
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        REDIS,
        {**REDIS, "OPTIONS": {"CLOSE_CONNECTION": False}},
        {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:6379/0"},
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/0"},
    ],
)
def test_a_cache_whose_close_does_nothing_is_not_closed(options):
    assert cache_closes_anything(options) is False


@pytest.mark.parametrize(
    "options",
    [
        {**REDIS, "OPTIONS": {"CLOSE_CONNECTION": True}},
        {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache", "LOCATION": "127.0.0.1:11211"},
    ],
)
def test_a_cache_whose_close_releases_connections_is_closed(options):
    assert cache_closes_anything(options) is True


def test_django_redis_closes_its_connections_when_the_setting_asks_for_it(settings):
    settings.DJANGO_REDIS_CLOSE_CONNECTION = True

    assert cache_closes_anything(REDIS) is True
