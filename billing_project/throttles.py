"""Rate limits whose counters are atomic in the cache (Redis INCR), so parallel requests cannot slip past.

DRF's SimpleRateThrottle reads a request history, decides, then writes it back: 60 parallel calls all
read the same short history and most get through. Here each request increments the counter of the
current window; the increment's result is its place in line, so exactly `num_requests` fit in a
window however many arrive together. The previous window's count, weighted by how much of it still
overlaps the last `duration` seconds, is added (the sliding-window approximation), so a burst at a
window's edge is not let through twice. A refused request gives its place back.

The caller's address is `billing_project.net.client_ip` (X-Forwarded-For only from trusted proxies),
never DRF's own reading of the header. While the cache is unreachable the limits fail open, as before.
"""

import contextlib

from rest_framework import throttling

from billing_project.net import client_ip


class AtomicRateThrottle(throttling.SimpleRateThrottle):
    def get_ident(self, request):
        return client_ip(request) or ""

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        window, elapsed = divmod(self.now, self.duration)
        current = f"{self.key}:{int(window)}"
        # Kept two windows: the next window weighs this one's count.
        self.cache.add(current, 0, timeout=2 * self.duration)
        try:
            place = self.cache.incr(current)
        except ValueError:  # the cache is unreachable (or the key expired in between): fail open
            return True
        earlier = self.cache.get(f"{self.key}:{int(window) - 1}") or 0
        if place + earlier * (1 - elapsed / self.duration) <= self.num_requests:
            return True
        with contextlib.suppress(ValueError):  # the counter went with the cache: nothing to give back
            self.cache.decr(current)
        self.wait_seconds = self.duration - elapsed
        return False

    def wait(self):
        return getattr(self, "wait_seconds", None)


class ScopedRateThrottle(throttling.ScopedRateThrottle, AtomicRateThrottle):
    """DRF's ScopedRateThrottle (the view's `throttle_scope`), counted atomically."""


class UserRateThrottle(throttling.UserRateThrottle, AtomicRateThrottle):
    """DRF's UserRateThrottle (one bucket per user, per address for anonymous callers), counted atomically."""
