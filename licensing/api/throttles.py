"""Rate limits of the license endpoints (scope "license", THROTTLE_LICENSE): one bucket per license
key, so a key shared around is slowed wherever it is used, and one per client IP, so a caller cannot
walk through many keys. The key is hashed: the cache never holds it in full."""

import hashlib

from billing_project.net import client_ip
from billing_project.throttles import AtomicRateThrottle
from licensing.keys import key_normalize


class LicenseKeyRateThrottle(AtomicRateThrottle):
    scope = "license"

    def get_cache_key(self, request, view):
        raw = request.data.get("license_key") if hasattr(request.data, "get") else None
        if not isinstance(raw, str) or not raw.strip():
            return None
        digest = hashlib.sha256(key_normalize(raw).encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": f"key:{digest}"}


class LicenseIpRateThrottle(AtomicRateThrottle):
    scope = "license"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": f"ip:{client_ip(request)}"}
