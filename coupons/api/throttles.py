"""Rate limits of `coupons/validate/` and `coupons/redeem/` (scope "coupon", THROTTLE_COUPON): one
bucket per user and one per client IP, so neither many accounts on one network nor one account on
many networks can walk through codes quickly."""

from billing_project.net import client_ip
from billing_project.throttles import AtomicRateThrottle, UserRateThrottle


class CouponUserRateThrottle(UserRateThrottle):
    scope = "coupon"


class CouponIpRateThrottle(AtomicRateThrottle):
    scope = "coupon"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": f"ip:{client_ip(request)}"}
