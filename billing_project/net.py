from dataclasses import dataclass

from django.conf import settings


def client_ip(request) -> str | None:
    """The caller's IP. X-Forwarded-For is trusted only as deep as NUM_PROXIES says."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if settings.NUM_PROXIES and forwarded:
        addresses = [address.strip() for address in forwarded.split(",") if address.strip()]
        if addresses:
            return addresses[-min(settings.NUM_PROXIES, len(addresses))]
    return request.META.get("REMOTE_ADDR")


@dataclass(frozen=True)
class ClientInfo:
    """Who is calling, as fraud rules and redemption records see it."""

    ip: str | None = None
    user_agent: str = ""
    device_fingerprint: str = ""


def client_info(request, *, device_fingerprint: str = "") -> ClientInfo:
    return ClientInfo(
        ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:1000],
        device_fingerprint=device_fingerprint,
    )
