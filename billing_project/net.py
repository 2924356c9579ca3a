from django.conf import settings


def client_ip(request) -> str | None:
    """The caller's IP. X-Forwarded-For is trusted only as deep as NUM_PROXIES says."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if settings.NUM_PROXIES and forwarded:
        addresses = [address.strip() for address in forwarded.split(",") if address.strip()]
        if addresses:
            return addresses[-min(settings.NUM_PROXIES, len(addresses))]
    return request.META.get("REMOTE_ADDR")
