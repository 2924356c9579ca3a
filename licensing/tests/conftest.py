import json
from urllib.parse import parse_qsl

import pytest
import stripe

from licensing.tests.factories import PerpetualLicenseFactory

STRIPE_TEST_KEY = "sk_test_licensing_0123456789abcdefghij"


@pytest.fixture
def owned_license(user):
    """An active 1.x license of `user`, 3 seats, BYOK on, no device yet."""
    return PerpetualLicenseFactory(user=user)


class FakeStripeHttp(stripe.HTTPClient):
    """Stripe's API at the HTTP layer: records each request (form body decoded) and answers like
    Stripe would, so the SDK runs for real without the network."""

    name = "fake"

    def __init__(self):
        super().__init__()
        self.requests: list[dict] = []
        self.fail_with_status: int | None = None

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        form = dict(parse_qsl(post_data or ""))
        self.requests.append({"method": method, "url": url, "headers": dict(headers or {}), "form": form})
        if self.fail_with_status:
            body = {"error": {"type": "api_error", "message": "Stripe is having a bad day."}}
            return json.dumps(body), self.fail_with_status, {}
        session_id = f"cs_test_{len(self.requests):04d}"
        metadata = {key[len("metadata[") : -1]: value for key, value in form.items() if key.startswith("metadata[")}
        body = {
            "id": session_id,
            "object": "checkout.session",
            "mode": form.get("mode"),
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "client_reference_id": form.get("client_reference_id"),
            "amount_total": int(form.get("line_items[0][price_data][unit_amount]", 0)),
            "currency": "usd",
            "metadata": metadata,
            "payment_status": "unpaid",
            "status": "open",
        }
        return json.dumps(body), 200, {"Request-Id": f"req_{len(self.requests)}"}

    def close(self):
        pass


@pytest.fixture
def stripe_http(settings, monkeypatch):
    """Stripe configured, its outbound HTTP stubbed (the one place it is)."""
    settings.STRIPE_SECRET_KEY = STRIPE_TEST_KEY
    fake = FakeStripeHttp()
    monkeypatch.setattr(stripe, "default_http_client", fake)
    monkeypatch.setattr(stripe, "max_network_retries", 0)
    return fake
