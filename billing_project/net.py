"""Who is calling, as rate limits, fraud rules and audit rows see it."""

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings


@lru_cache(maxsize=4)
def _networks(entries: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address(value: str | None):
    try:
        address = ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None
    return address.ipv4_mapped or address if address.version == 6 else address


def is_trusted_proxy(remote_addr: str | None) -> bool:
    address = _address(remote_addr)
    return address is not None and any(address in network for network in _networks(tuple(settings.TRUSTED_PROXIES)))


def client_ip(request) -> str | None:
    """The caller's IP. X-Forwarded-For is read only when the connection comes from one of
    TRUSTED_PROXIES, and then only NUM_PROXIES deep (the entry the outermost trusted proxy wrote);
    anyone else talking to the service directly is known by the address they connect from."""
    remote_addr = request.META.get("REMOTE_ADDR")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if settings.NUM_PROXIES and forwarded and is_trusted_proxy(remote_addr):
        addresses = [address.strip() for address in forwarded.split(",") if address.strip()]
        if addresses:
            chosen = _address(addresses[-min(settings.NUM_PROXIES, len(addresses))])
            if chosen is not None:
                return str(chosen)
    return remote_addr


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
