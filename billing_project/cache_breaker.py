"""The Redis cache behind a circuit breaker (SPEC 6): when Redis is down the API answers from the database.

Every cache operation goes through the breaker of its Redis server. After CACHE_BREAKER_FAILURES
consecutive connection errors it opens for CACHE_BREAKER_COOLDOWN_SECONDS: no call reaches Redis, reads
answer as a miss and writes are skipped, so a request never waits on a socket timeout. After the cool-down
one trial call goes through (half-open): its success closes the breaker, its failure opens it again.

What callers see while Redis is not reached: `get` answers its default, `get_many` {}, `has_key` False,
`set`/`add`/`delete`/`touch` report that nothing was written, `incr`/`decr` raise ValueError as for a
missing key. So `get_or_set` answers the computed default, and DRF throttles (get, then set) fail open:
while the breaker is open nobody is throttled.

Not pybreaker: its CircuitBreaker.call holds one lock for the whole call, which would serialize every
cache call of a threaded worker behind a single slow Redis round trip.

Each cache object (Django makes one per thread) keeps one Redis connection of its own instead of taking
one from the pool and giving it back for every call: that was a quarter of a call's CPU (bench/RESULTS.md).
redis-py checks the process id only in the pool, so a process forked after a call (Celery's prefork
pool, gunicorn with preload) drops the connections it inherited and opens its own. A thread that ends
gives its caches' connections back to the pool then and there (`_ThreadExit`).
"""

import logging
import os
import sys
import threading
import time
import weakref

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.utils.module_loading import import_string
from django_redis.cache import RedisCache
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from billing_project.metrics import REDIS_ERRORS

logger = logging.getLogger(__name__)

# What "Redis did not answer" looks like: redis-py's errors (django_redis re-raises the original one when
# IGNORE_EXCEPTIONS is off) and the socket's own (TimeoutError and ConnectionError are OSErrors).
REDIS_FAILURES = (RedisError, ConnectionInterrupted, OSError)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

# SET key value PX milliseconds for every key: ARGV[2i - 1] the expiry of KEYS[i], ARGV[2i] its value.
SET_MANY_EXPIRING = "for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[2 * i], 'PX', ARGV[2 * i - 1]) end"


class CircuitBreaker:
    """Consecutive-failure breaker, shared by the threads of one process (every method takes the lock,
    but the lock is never held while Redis is called)."""

    def __init__(self, *, failures: int, cooldown_seconds: float, clock=time.monotonic):
        self.failures_to_open = failures
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return CLOSED
            if self._trial_running or self._cooled_down():
                return HALF_OPEN
            return OPEN

    def admit(self) -> str | None:
        """Whether a call may go to Redis now: "call" when closed, "trial" for the one call let through
        after the cool-down, None while open (and while the trial runs)."""
        with self._lock:
            if self._opened_at is None:
                return "call"
            if self._trial_running or not self._cooled_down():
                return None
            self._trial_running = True
            return "trial"

    def record(self, admission: str, *, succeeded: bool) -> None:
        with self._lock:
            trial = admission == "trial"
            if trial:
                self._trial_running = False
            if succeeded:
                if self._opened_at is not None:
                    logger.warning("cache breaker closed: Redis answers again")
                self._failures, self._opened_at = 0, None
                return
            self._failures += 1
            if trial or (self._opened_at is None and self._failures >= self.failures_to_open):
                logger.warning(
                    "cache breaker open for %ss after %s failure(s): the API answers from the database",
                    self.cooldown_seconds,
                    self._failures,
                )
                self._opened_at = self._clock()

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.cooldown_seconds


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(server) -> CircuitBreaker:
    """The process's breaker for one Redis server. Django builds a cache object per thread; they share it."""
    key = str(server)
    with _breakers_lock:
        if key not in _breakers:
            _breakers[key] = CircuitBreaker(
                failures=settings.CACHE_BREAKER_FAILURES,
                cooldown_seconds=settings.CACHE_BREAKER_COOLDOWN_SECONDS,
            )
        return _breakers[key]


def breakers_reset() -> None:
    """Forgets every breaker (tests): the next cache built reads the settings afresh."""
    with _breakers_lock:
        _breakers.clear()


def _not_found(key):
    raise ValueError(f"Key {key!r} not found: the cache is unavailable")


_redis_caches: weakref.WeakSet = weakref.WeakSet()


def _inherited_connections_dropped() -> None:
    """In a forked child: the parent's sockets closed here (the parent's stay open, as redis-py shuts a
    socket down only in the process that opened it) and the clients forgotten, made afresh on next use."""
    for redis_cache in list(_redis_caches):
        for client in redis_cache.redis_clients():
            if client.connection is not None:
                client.connection.disconnect()
        redis_cache._client = None


os.register_at_fork(after_in_child=_inherited_connections_dropped)


class _ThreadExit:
    """Gives back to their pool the connections of the caches its thread built, when that thread ends.

    A cache object sits in a reference cycle (django_redis's client points back at it), so only the
    garbage collector's full pass frees it, and the connection it keeps with it. Threads that come and
    go (a development server's, a test's) took the pool's 100 connections that way, after which every
    call failed and the breaker opened. This object sits in a thread-local slot and in no cycle, so it
    is freed as its thread ends. Not while the interpreter shuts down: the sockets close with the
    process, and a daemon thread stopped inside a pool call would hold the pool's lock for ever."""

    def __init__(self):
        self.caches = weakref.WeakSet()

    def __del__(self):
        if sys.is_finalizing():
            return
        for redis_cache in list(self.caches):
            redis_cache.connections_released()


_this_thread = threading.local()


def _released_when_this_thread_ends(redis_cache) -> None:
    if not hasattr(_this_thread, "exit"):
        _this_thread.exit = _ThreadExit()
    _this_thread.exit.caches.add(redis_cache)


class CircuitBreakerRedisCache(RedisCache):
    """django_redis's RedisCache with every operation of the cache API behind the server's breaker.
    Needs IGNORE_EXCEPTIONS off (forced here), so that the breaker sees the errors; and keeps one
    connection per cache object (forced here too, with the fork hook above)."""

    def __init__(self, server, params):
        options = params.get("OPTIONS", {})
        client_kwargs = {**options.get("REDIS_CLIENT_KWARGS", {}), "single_connection_client": True}
        super().__init__(server, {**params, "OPTIONS": {**options, "REDIS_CLIENT_KWARGS": client_kwargs}})
        self._ignore_exceptions = False
        self.breaker = breaker_for(server)
        self._set_with_expiry = None
        _redis_caches.add(self)
        _released_when_this_thread_ends(self)

    def redis_clients(self) -> list:
        """The redis-py clients this cache has made so far (django_redis makes them on first use)."""
        if self._client is None:
            return []
        return [client for client in self._client._clients if client is not None]

    def connections_released(self) -> None:
        """Each client's own connection back to the pool; a later call, if any, borrows one per command."""
        for client in self.redis_clients():
            client.close()

    def _guarded(self, operation, unreachable, *args, **kwargs):
        """Runs operation through the breaker; `unreachable()` answers when Redis is not called or fails."""
        admission = self.breaker.admit()
        if admission is None:
            return unreachable()
        succeeded = False
        try:
            result = operation(*args, **kwargs)
            succeeded = True
            return result
        except REDIS_FAILURES as exc:
            REDIS_ERRORS.inc()
            logger.warning("cache: Redis call failed: %s: %s", type(exc).__name__, exc)
            return unreachable()
        except Exception:
            succeeded = True  # Redis answered; the error is the caller's (incr on a missing key, say)
            raise
        finally:
            self.breaker.record(admission, succeeded=succeeded)

    # Reads answer as a miss.
    def get(self, key, default=None, version=None, client=None):
        return self._guarded(super().get, lambda: default, key, default=default, version=version, client=client)

    def get_many(self, *args, **kwargs):
        return self._guarded(super().get_many, dict, *args, **kwargs)

    def has_key(self, *args, **kwargs):
        return self._guarded(super().has_key, lambda: False, *args, **kwargs)

    def keys(self, *args, **kwargs):
        return self._guarded(super().keys, list, *args, **kwargs)

    def iter_keys(self, *args, **kwargs):
        return self._guarded(super().iter_keys, lambda: iter(()), *args, **kwargs)

    def ttl(self, *args, **kwargs):
        return self._guarded(super().ttl, lambda: 0, *args, **kwargs)

    def pttl(self, *args, **kwargs):
        return self._guarded(super().pttl, lambda: 0, *args, **kwargs)

    # Counters behave as for a missing key: Django's contract is a ValueError.
    def incr(self, key, *args, **kwargs):
        return self._guarded(super().incr, lambda: _not_found(key), key, *args, **kwargs)

    def decr(self, key, *args, **kwargs):
        return self._guarded(super().decr, lambda: _not_found(key), key, *args, **kwargs)

    def incr_version(self, key, *args, **kwargs):
        return self._guarded(super().incr_version, lambda: _not_found(key), key, *args, **kwargs)

    # Writes and deletes are skipped and report that nothing was written.
    def set(self, *args, **kwargs):
        return self._guarded(super().set, lambda: False, *args, **kwargs)

    def add(self, *args, **kwargs):
        return self._guarded(super().add, lambda: False, *args, **kwargs)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self._guarded(self._set_many, lambda: list(data), data, timeout, version)

    def _set_many(self, data, timeout, version) -> list:
        """All the keys in one command (a script), each with its expiry. django_redis sends one SET per
        key through its own `set`, whose Python work per key was most of a 100-user batch's balance
        cache writes (0.7-0.8 ms of CPU for 50 keys, 0.2-0.25 ms this way). No expiry, or one already past, goes the
        usual way."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None or timeout <= 0:
            super().set_many(data, timeout=timeout, version=version)
            return []
        self._set_expiring([(key, value, timeout) for key, value in data.items()], version)
        return []

    def set_many_expiring(self, items: list[tuple[str, object, float]]) -> None:
        """Each (key, value, timeout in seconds, positive) written in one command, as `set_many` writes
        keys that share a timeout."""
        self._guarded(self._set_expiring, lambda: None, items)

    def _set_expiring(self, items: list[tuple[str, object, float]], version=None) -> None:
        client = self.client
        keys, arguments = [], []
        for key, value, timeout in items:
            keys.append(client.make_key(key, version=version))
            arguments += (int(timeout * 1000), client.encode(value))
        redis = client.get_client(write=True)
        if self._set_with_expiry is None:
            self._set_with_expiry = redis.register_script(SET_MANY_EXPIRING)
        self._set_with_expiry(keys=keys, args=arguments, client=redis)

    def touch(self, *args, **kwargs):
        return self._guarded(super().touch, lambda: False, *args, **kwargs)

    def expire(self, *args, **kwargs):
        return self._guarded(super().expire, lambda: False, *args, **kwargs)

    def persist(self, *args, **kwargs):
        return self._guarded(super().persist, lambda: False, *args, **kwargs)

    def delete(self, *args, **kwargs):
        return self._guarded(super().delete, lambda: False, *args, **kwargs)

    def delete_many(self, *args, **kwargs):
        return self._guarded(super().delete_many, lambda: 0, *args, **kwargs)

    def delete_pattern(self, *args, **kwargs):
        return self._guarded(super().delete_pattern, lambda: 0, *args, **kwargs)

    def clear(self):
        return self._guarded(super().clear, lambda: None)


def cache_closes_anything(options: dict) -> bool:
    """Whether closing the cache of this CACHES entry does anything: Django's local memory cache and
    base class close nothing, django-redis closes its connections only with CLOSE_CONNECTION (its
    pool otherwise keeps them for the next request)."""
    backend = import_string(options["BACKEND"])
    if backend.close is BaseCache.close:
        return False
    if issubclass(backend, RedisCache):
        default = getattr(settings, "DJANGO_REDIS_CLOSE_CONNECTION", False)
        return bool(options.get("OPTIONS", {}).get("CLOSE_CONNECTION", default))
    return True
