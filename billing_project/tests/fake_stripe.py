"""Stripe's API at the HTTP layer, for tests: the `stripe` SDK runs for real and only its HTTP client
is replaced. Each request is recorded (form body decoded) and answered the way Stripe answers it.
Also signs webhook bodies with the SDK's own signing helper."""

import json
import time
from urllib.parse import parse_qsl, urlparse

import stripe

WEBHOOK_SECRET = "whsec_test_0123456789abcdefghijklmnopqrstuv"


def signature_header(payload: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for `payload`."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)


def event_payload(event_type: str, data_object: dict, *, event_id: str, created: int | None = None) -> str:
    """A webhook body shaped like Stripe's (API version 2024-06-20 layout)."""
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2024-06-20",
            "created": created or int(time.time()),
            "type": event_type,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": data_object},
        }
    )


class FakeStripeHttp(stripe.HTTPClient):
    name = "fake"

    def __init__(self):
        super().__init__()
        self.requests: list[dict] = []
        self.fail_with_status: int | None = None
        self.decline_payments = False
        self.coupons: dict[str, int] = {}

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        form = dict(parse_qsl(post_data or ""))
        self.requests.append({"method": method, "url": url, "headers": dict(headers or {}), "form": form})
        if self.fail_with_status:
            return self._error(self.fail_with_status, "api_error", "Stripe is having a bad day.")
        number = f"{len(self.requests):04d}"
        path = urlparse(url).path.removeprefix("/v1/")
        parts = path.split("/")
        if parts[0] == "checkout":
            session = self._session(form, number)
            session["amount_total"] -= self.coupons.get(form.get("discounts[0][coupon]"), 0)
            return self._ok(session)
        if parts[0] == "invoiceitems":
            return self._ok({"id": f"ii_test_{number}", "object": "invoiceitem"})
        if parts[0] == "invoices" and len(parts) == 1:
            return self._ok({"id": f"in_test_{number}", "object": "invoice", "status": "draft"})
        if parts[0] == "invoices" and parts[-1] == "pay":
            if self.decline_payments:
                return self._error(402, "card_error", "Your card was declined.", code="card_declined")
            return self._ok({"id": parts[1], "object": "invoice", "status": "paid"})
        if parts[0] == "coupons":
            self.coupons[f"coupon_test_{number}"] = int(form["amount_off"])
            return self._ok({"id": f"coupon_test_{number}", "object": "coupon", "amount_off": int(form["amount_off"])})
        if parts[0] == "subscriptions":
            return self._ok(self._subscription(parts[1], method, form))
        return self._error(404, "invalid_request_error", f"Unrecognized request URL ({method} {path}).")

    @staticmethod
    def _session(form: dict, number: str) -> dict:
        session_id = f"cs_test_{number}"
        metadata = {key[len("metadata[") : -1]: value for key, value in form.items() if key.startswith("metadata[")}
        return {
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

    @staticmethod
    def _subscription(subscription_id: str, method: str, form: dict) -> dict:
        return {
            "id": subscription_id,
            "object": "subscription",
            "status": "canceled" if method == "delete" else "active",
            "cancel_at_period_end": form.get("cancel_at_period_end") == "true",
            "items": {"object": "list", "data": [{"id": "si_test_1", "price": {"id": "price_1", "product": "prod_1"}}]},
        }

    @staticmethod
    def _ok(body: dict):
        return json.dumps(body), 200, {"Request-Id": "req_test"}

    @staticmethod
    def _error(status: int, error_type: str, message: str, **extra):
        return json.dumps({"error": {"type": error_type, "message": message, **extra}}), status, {}

    def close(self):
        pass
