"""A stateful Stripe emulator for tests: a real HTTP server on 127.0.0.1 that the `stripe` SDK talks to
through `STRIPE_API_BASE`, exactly as it talks to Stripe (form-encoded requests, the API version's JSON
shapes, idempotency keys, error bodies). Nothing of the SDK or of our code is patched.

It keeps customers, checkout sessions, coupons, invoices with their items and payments, refunds and
subscriptions, and answers as Stripe does:
- an `Idempotency-Key` replays the first answer for the same parameters (400 `idempotency_error` for
  different ones); Stripe's own 5xx answers are not kept, so a retry runs again;
- paying an invoice finalizes it; a paid invoice cannot be paid again; a void one cannot be paid;
- `pay_mode` decides what paying does: `paid`, `decline` (402 card_error, the invoice stays open),
  `async` (200 with the invoice still open and its payment processing, as for SEPA or ACH), or
  `action_required` (402 `invoice_payment_intent_requires_action`).

Faults are injected per request (`inject`), at the HTTP layer, the way a network or Stripe fails:
`unavailable` (500 before anything is done), `rate_limited` (429), `invalid` (400), `drop` (the
request is done, then the connection is closed without an answer: a lost response), `hang`
(the server waits `seconds` before doing the request: the client times out, the request is done anyway).

`charges` lists every payment that really moved money (invoice paid, or checkout paid through
`checkout_complete`), so a test can assert that an operation charged at most once.
"""

import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlparse

import stripe

WEBHOOK_SECRET = "whsec_test_0123456789abcdefghijklmnopqrstuv"
API_VERSION = stripe.api_version


def signature_header(payload: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for `payload`, from the SDK's own signing code."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)


def event_payload(event_type: str, data_object: dict, *, event_id: str, created: int | None = None) -> str:
    """A webhook body shaped like Stripe's (a snapshot event of the pinned API version)."""
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": created or int(time.time()),
            "type": event_type,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": data_object},
        }
    )


def form_nested(form: dict) -> dict:
    """`a[b][0][c]=v` form keys as nested dicts and lists, as Stripe reads them."""
    nested: dict = {}
    for key, value in form.items():
        parts = re.findall(r"[^\[\]]+", key)
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(nested)


def _lists(node):
    if not isinstance(node, dict):
        return node
    if node and all(key.isdigit() for key in node):
        return [_lists(node[key]) for key in sorted(node, key=int)]
    return {key: _lists(value) for key, value in node.items()}


class StripeApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str, **extra):
        super().__init__(message)
        self.status, self.body = status, {"error": {"type": error_type, "message": message, **extra}}


@dataclass
class Fault:
    method: str
    path: re.Pattern
    kind: str
    times: int
    seconds: float = 0.0


@dataclass
class EmulatorState:
    objects: dict = field(default_factory=dict)
    idempotency: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)
    charges: list = field(default_factory=list)
    faults: list = field(default_factory=list)
    pay_mode: str = "paid"
    refund_mode: str = "succeeded"
    transaction_violations: list = field(default_factory=list)


class StripeEmulator:
    """The emulator's state and behaviour; `serve()` puts it behind an HTTP server."""

    def __init__(self):
        self.state = EmulatorState()
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.url = ""
        self.watch_transactions_of = None

    # Test-facing controls

    def reset(self) -> None:
        with self._lock:
            self.state = EmulatorState()
            self.watch_transactions_of = None

    @property
    def requests(self) -> list:
        return self.state.requests

    @property
    def charges(self) -> list:
        return self.state.charges

    @property
    def pay_mode(self) -> str:
        return self.state.pay_mode

    @pay_mode.setter
    def pay_mode(self, mode: str) -> None:
        assert mode in ("paid", "decline", "async", "action_required")
        self.state.pay_mode = mode

    def inject(self, method: str, path: str, kind: str, *, times: int = 1, seconds: float = 0.0) -> None:
        """The next `times` requests matching `method` and the path regex `path` (after /v1/) fail as `kind`."""
        assert kind in ("unavailable", "rate_limited", "invalid", "drop", "hang")
        self.state.faults.append(Fault(method.upper(), re.compile(path), kind, times, seconds))

    def calls(self, method: str | None = None, path: str | None = None) -> list:
        """The requests received, as (method, path after /v1/), optionally filtered by a path regex."""
        seen = [(request["method"], request["path"]) for request in self.state.requests]
        return [
            (m, p)
            for m, p in seen
            if (method is None or m == method.upper()) and (path is None or re.fullmatch(path, p))
        ]

    def wait_for_request(self, method: str, path: str, *, seconds: float = 10.0) -> None:
        """Returns once a request matching `method` and the path regex `path` has arrived."""
        deadline = time.monotonic() + seconds
        while not self.calls(method, path):
            assert time.monotonic() < deadline, f"no {method} {path} within {seconds} s"
            time.sleep(0.01)

    def object(self, object_id: str) -> dict:
        return self.state.objects[object_id]

    def objects_of(self, kind: str) -> list:
        return [obj for obj in self.state.objects.values() if obj["object"] == kind]

    def subscription_add(self, subscription_id: str, *, customer: str = "", unit_amount: int = 1900) -> dict:
        return self._store(self._subscription(subscription_id, customer, unit_amount))

    def invoice_open(self, invoice_id: str, *, customer: str, amount: int, subscription: str = "") -> dict:
        """An open invoice Stripe made on its own (a subscription's renewal whose payment failed)."""
        with self._lock:
            invoice = self._invoice(customer=customer, currency="usd", metadata={})
            del self.state.objects[invoice["id"]]
            invoice["id"] = invoice_id
            self._store(invoice)
            if subscription:
                invoice["billing_reason"] = "subscription_cycle"
                invoice["parent"] = {
                    "type": "subscription_details",
                    "subscription_details": {"subscription": subscription, "metadata": {}},
                }
            self._line_add(invoice, amount, "Renewal")
            self._finalize(invoice)
            invoice["attempt_count"] = 1
            return invoice

    def checkout_complete(self, session_id: str, *, payment_status: str = "paid") -> dict:
        """The customer pays on the hosted page: the session completes (and its subscription, invoice
        and payment intent exist, as Stripe creates them). Returns the session for an event."""
        with self._lock:
            session = self.state.objects[session_id]
            session.update(status="complete", payment_status=payment_status)
            if session["mode"] == "subscription":
                subscription = self._store(
                    self._subscription(self._id("sub"), session["customer"], session["amount_total"])
                )
                session["subscription"] = subscription["id"]
                # A subscription's invoices keep their own metadata empty; the subscription's is in `parent`.
                invoice = self._invoice(customer=session["customer"], currency=session["currency"], metadata={})
                invoice["billing_reason"] = "subscription_create"
                invoice["parent"] = {
                    "type": "subscription_details",
                    "subscription_details": {"subscription": subscription["id"], "metadata": session["metadata"]},
                }
                self._line_add(invoice, session["amount_total"], "Subscription")
                session["invoice"] = invoice["id"]
                if payment_status == "paid":
                    self._invoice_paid(invoice)
            elif payment_status == "paid":
                intent = self._store({"id": self._id("pi"), "object": "payment_intent", "status": "succeeded"})
                session["payment_intent"] = intent["id"]
                self.state.charges.append({"session": session_id, "amount": session["amount_total"]})
            return dict(session)

    def watch_transactions(self, database_name: str) -> None:
        """While each request is served, look from another connection for a connection of our
        database left inside a transaction: a provider call made with a transaction open. On
        PostgreSQL only, whose pg_stat_activity shows it (SQLite has no such view)."""
        from django.db import connection

        if connection.vendor == "postgresql":
            self.watch_transactions_of = database_name

    # Serving

    def serve(self) -> "StripeEmulator":
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                return None

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                emulator._serve(self, self.command, self.path, body)

            do_GET = do_POST = do_DELETE = _answer

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        return self

    def _serve(self, handler, method: str, raw_path: str, body: str) -> None:
        parsed = urlparse(raw_path)
        path = parsed.path.removeprefix("/v1/")
        form = dict(parse_qsl(body or parsed.query, keep_blank_values=True))
        key = handler.headers.get("Idempotency-Key")
        self.state.requests.append(
            {"method": method, "path": path, "url": raw_path, "form": form, "headers": dict(handler.headers)}
        )
        self._transactions_check()
        fault = self._fault_for(method, path)
        if fault is not None and fault.kind == "hang":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind in ("unavailable", "rate_limited", "invalid"):
            status, payload = {
                "unavailable": (500, {"error": {"type": "api_error", "message": "Stripe had a problem."}}),
                "rate_limited": (
                    429,
                    {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests."}},
                ),
                "invalid": (
                    400,
                    {"error": {"type": "invalid_request_error", "code": "parameter_invalid", "message": "Bad."}},
                ),
            }[fault.kind]
            return self._write(handler, status, payload)
        status, payload = self._idempotent(method, path, form, key)
        if fault is not None and fault.kind == "drop":
            handler.close_connection = True
            handler.connection.shutdown(2)
            return None
        return self._write(handler, status, payload)

    def _write(self, handler, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("Request-Id", f"req_emulated_{len(self.state.requests)}")
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client gave up (a timeout): what was done stays done, as at Stripe
            handler.close_connection = True

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.state.faults:
                if fault.times > 0 and fault.method == method and fault.path.fullmatch(path):
                    fault.times -= 1
                    return fault
        return None

    def _transactions_check(self) -> None:
        if not self.watch_transactions_of:
            return
        import psycopg
        from django.db import connection

        settings = connection.settings_dict
        with psycopg.connect(
            host=settings["HOST"] or None,
            port=settings["PORT"] or None,
            user=settings["USER"],
            password=settings["PASSWORD"] or None,
            dbname=self.watch_transactions_of,
            autocommit=True,
        ) as watcher:
            rows = watcher.execute(
                "SELECT pid, query FROM pg_stat_activity WHERE datname = %s AND state LIKE 'idle in transaction%%' "
                "AND pid <> pg_backend_pid()",
                (self.watch_transactions_of,),
            ).fetchall()
        self.state.transaction_violations.extend(rows)

    def _idempotent(self, method: str, path: str, form: dict, key: str | None) -> tuple[int, dict]:
        with self._lock:
            if key and method == "POST":
                stored = self.state.idempotency.get(key)
                if stored is not None:
                    if stored["request"] != (path, form):
                        return 400, {
                            "error": {
                                "type": "idempotency_error",
                                "message": "Keys for idempotent requests can only be used with the same parameters.",
                            }
                        }
                    return stored["status"], stored["payload"]
            try:
                status, payload = 200, self._route(method, path, form_nested(form))
            except StripeApiError as error:
                status, payload = error.status, error.body
            if key and method == "POST" and status < 500:
                self.state.idempotency[key] = {"request": (path, form), "status": status, "payload": payload}
            return status, payload

    # The API

    def _id(self, prefix: str) -> str:
        return f"{prefix}_emu{next(self._ids):05d}"

    def _store(self, obj: dict) -> dict:
        self.state.objects[obj["id"]] = obj
        return obj

    def _get(self, object_id: str, kind: str) -> dict:
        obj = self.state.objects.get(object_id)
        if obj is None or obj["object"] != kind:
            raise StripeApiError(
                404, "invalid_request_error", f"No such {kind}: '{object_id}'", code="resource_missing", param="id"
            )
        return obj

    def _route(self, method: str, path: str, params: dict) -> dict:
        parts = path.split("/")
        if (answer := self._portal_and_lists(method, parts, params)) is not None:
            return answer
        resource = parts[0]
        if resource == "customers" and method == "POST" and len(parts) == 1:
            return self._store(
                {
                    "id": self._id("cus"),
                    "object": "customer",
                    "email": params.get("email"),
                    "metadata": params.get("metadata", {}),
                    "created": int(time.time()),
                }
            )
        if resource == "customers" and method == "GET" and len(parts) == 2:
            return self._get(parts[1], "customer")
        if resource == "coupons" and method == "DELETE" and len(parts) == 2:
            self._get(parts[1], "coupon")
            del self.state.objects[parts[1]]
            return {"id": parts[1], "object": "coupon", "deleted": True}
        if resource == "coupons" and method == "POST":
            return self._store(
                {
                    "id": self._id("coupon"),
                    "object": "coupon",
                    "amount_off": int(params["amount_off"]),
                    "currency": params.get("currency"),
                    "duration": params.get("duration"),
                    "name": params.get("name"),
                    "valid": True,
                }
            )
        if resource == "checkout" and parts[1] == "sessions":
            return self._checkout(method, parts[2:], params)
        if resource == "invoices":
            return self._invoices(method, parts[1:], params)
        if resource == "invoiceitems" and method == "POST":
            return self._invoice_item(params)
        if resource == "refunds":
            return self._refunds(method, parts[1:], params)
        if resource == "subscriptions" and len(parts) == 2:
            return self._subscriptions(method, parts[1], params)
        raise StripeApiError(404, "invalid_request_error", f"Unrecognized request URL ({method}: /v1/{path}).")

    def _checkout(self, method: str, rest: list, params: dict) -> dict:
        if method == "POST" and not rest:
            item = params["line_items"][0]["price_data"]
            amount = int(item["unit_amount"])
            for discount in params.get("discounts", []):
                amount -= self._get(discount["coupon"], "coupon")["amount_off"]
            session_id = self._id("cs")
            return self._store(
                {
                    "id": session_id,
                    "object": "checkout.session",
                    "mode": params.get("mode"),
                    "url": f"https://checkout.stripe.com/c/pay/{session_id}",
                    "client_reference_id": params.get("client_reference_id"),
                    "customer": params.get("customer"),
                    "customer_email": params.get("customer_email"),
                    "amount_subtotal": int(item["unit_amount"]),
                    "amount_total": max(amount, 0),
                    "currency": item.get("currency", "usd"),
                    "metadata": params.get("metadata", {}),
                    "payment_status": "unpaid",
                    "status": "open",
                    "payment_intent": None,
                    "subscription": None,
                    "invoice": None,
                    "created": int(time.time()),
                    "expires_at": int(time.time()) + 86_400,
                }
            )
        session = self._get(rest[0], "checkout.session")
        if method == "POST" and rest[1:] == ["expire"]:
            if session["status"] != "open":
                raise StripeApiError(400, "invalid_request_error", "Only open sessions can be expired.")
            session["status"] = "expired"
        return session

    def _invoice(self, *, customer: str, currency: str, metadata: dict, description: str = "") -> dict:
        now = int(time.time())
        invoice_id = self._id("in")
        return self._store(
            {
                "id": invoice_id,
                "object": "invoice",
                "customer": customer,
                "status": "draft",
                "currency": currency,
                "description": description,
                "metadata": metadata,
                "amount_due": 0,
                "amount_paid": 0,
                "amount_remaining": 0,
                "subtotal": 0,
                "total": 0,
                "attempt_count": 0,
                "attempted": False,
                "auto_advance": False,
                "billing_reason": "manual",
                "collection_method": "charge_automatically",
                "created": now,
                "period_start": now,
                "period_end": now,
                "number": None,
                "hosted_invoice_url": None,
                "invoice_pdf": None,
                "parent": None,
                "lines": {"object": "list", "data": [], "has_more": False},
                "payments": {"object": "list", "data": [], "has_more": False},
                "status_transitions": {"finalized_at": None, "paid_at": None, "voided_at": None},
                "livemode": False,
            }
        )

    def _line_add(self, invoice: dict, amount: int, description: str, item_id: str | None = None) -> None:
        now = int(time.time())
        invoice["lines"]["data"].append(
            {
                "id": self._id("il"),
                "object": "line_item",
                "amount": amount,
                "currency": invoice["currency"],
                "description": description,
                "invoice": invoice["id"],
                "parent": {"type": "invoice_item_details", "invoice_item_details": {"invoice_item": item_id}}
                if item_id
                else None,
                "period": {"start": now, "end": now},
            }
        )
        total = sum(line["amount"] for line in invoice["lines"]["data"])
        invoice.update(amount_due=total, amount_remaining=total, subtotal=total, total=total)

    def _invoices(self, method: str, rest: list, params: dict) -> dict:
        if method == "POST" and not rest:
            return self._invoice(
                customer=params["customer"],
                currency=params.get("currency", "usd"),
                metadata=params.get("metadata", {}),
                description=params.get("description", ""),
            )
        invoice = self._get(rest[0], "invoice")
        action = rest[1] if len(rest) > 1 else None
        if method == "DELETE":
            if invoice["status"] != "draft":
                raise StripeApiError(400, "invalid_request_error", "Only draft invoices can be deleted.")
            del self.state.objects[invoice["id"]]
            return {"id": invoice["id"], "object": "invoice", "deleted": True}
        if action == "pay":
            return self._pay(invoice)
        if method == "POST" and action is None:
            if "auto_advance" in params:
                invoice["auto_advance"] = params["auto_advance"] == "true"
            return invoice
        if action == "void":
            if invoice["status"] != "open":
                raise StripeApiError(400, "invalid_request_error", f"A {invoice['status']} invoice cannot be voided.")
            invoice["status"] = "void"
            invoice["status_transitions"]["voided_at"] = int(time.time())
            return invoice
        return invoice

    def _finalize(self, invoice: dict) -> None:
        if invoice["status"] == "draft":
            invoice["status"] = "open"
            invoice["number"] = f"EMU-{invoice['id'][-5:]}"
            invoice["hosted_invoice_url"] = f"https://invoice.stripe.com/i/{invoice['id']}"
            invoice["invoice_pdf"] = f"https://pay.stripe.com/invoice/{invoice['id']}/pdf"
            invoice["status_transitions"]["finalized_at"] = int(time.time())

    def _pay(self, invoice: dict) -> dict:
        if invoice["status"] == "paid":
            raise StripeApiError(400, "invalid_request_error", "Invoice is already paid.", code="invoice_already_paid")
        if invoice["status"] in ("void", "uncollectible"):
            raise StripeApiError(400, "invalid_request_error", f"This invoice is {invoice['status']}.")
        self._finalize(invoice)
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        mode = self.state.pay_mode
        if mode == "decline":
            raise StripeApiError(
                402, "card_error", "Your card was declined.", code="card_declined", decline_code="generic_decline"
            )
        if mode == "action_required":
            raise StripeApiError(
                402,
                "card_error",
                "This payment requires additional user action.",
                code="invoice_payment_intent_requires_action",
            )
        if mode == "async":
            intent = self._store({"id": self._id("pi"), "object": "payment_intent", "status": "processing"})
            invoice["payments"]["data"] = [self._invoice_payment(invoice, intent["id"], "open")]
            return invoice
        self._invoice_paid(invoice)
        return invoice

    def _invoice_payment(self, invoice: dict, intent_id: str, status: str) -> dict:
        return {
            "id": self._id("inpay"),
            "object": "invoice_payment",
            "amount_paid": invoice["amount_due"] if status == "paid" else None,
            "amount_requested": invoice["amount_due"],
            "currency": invoice["currency"],
            "invoice": invoice["id"],
            "is_default": True,
            "payment": {"type": "payment_intent", "payment_intent": intent_id},
            "status": status,
            "status_transitions": {"paid_at": int(time.time()) if status == "paid" else None, "canceled_at": None},
        }

    def _invoice_paid(self, invoice: dict) -> None:
        """The money moves: the invoice is paid by a succeeded payment intent."""
        self._finalize(invoice)
        pending = [entry for entry in invoice["payments"]["data"] if entry["status"] == "open"]
        intent_id = pending[0]["payment"]["payment_intent"] if pending else None
        if intent_id is None:
            intent_id = self._store({"id": self._id("pi"), "object": "payment_intent", "status": "succeeded"})["id"]
        self.state.objects[intent_id]["status"] = "succeeded"
        invoice["payments"]["data"] = [self._invoice_payment(invoice, intent_id, "paid")]
        invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)
        invoice["status_transitions"]["paid_at"] = int(time.time())
        self.state.charges.append({"invoice": invoice["id"], "amount": invoice["amount_due"]})

    def async_payment_settle(self, invoice_id: str, *, succeeded: bool) -> dict:
        """The bank debit of an invoice paid asynchronously clears (or fails). Returns the invoice."""
        with self._lock:
            invoice = self.state.objects[invoice_id]
            if succeeded:
                self._invoice_paid(invoice)
            else:
                for entry in invoice["payments"]["data"]:
                    entry["status"] = "failed"
            return json.loads(json.dumps(invoice))

    def _invoice_item(self, params: dict) -> dict:
        item = self._store(
            {
                "id": self._id("ii"),
                "object": "invoiceitem",
                "customer": params["customer"],
                "amount": int(params["amount"]),
                "currency": params.get("currency", "usd"),
                "description": params.get("description"),
                "invoice": params.get("invoice"),
            }
        )
        if item["invoice"]:
            invoice = self._get(item["invoice"], "invoice")
            if invoice["status"] != "draft":
                raise StripeApiError(400, "invalid_request_error", "Items can only be added to draft invoices.")
            self._line_add(invoice, item["amount"], item["description"] or "", item["id"])
        return item

    def _refunds(self, method: str, rest: list, params: dict) -> dict:
        if rest:
            return self._get(rest[0], "refund")
        intent = params.get("payment_intent")
        if intent and intent not in self.state.objects:
            raise StripeApiError(
                404, "invalid_request_error", f"No such payment_intent: '{intent}'", code="resource_missing"
            )
        refund = self._store(
            {
                "id": self._id("re"),
                "object": "refund",
                "amount": int(params["amount"]) if params.get("amount") else 0,
                "currency": "usd",
                "payment_intent": intent,
                "charge": params.get("charge"),
                "status": self.state.refund_mode,
                "reason": params.get("reason"),
                "metadata": params.get("metadata", {}),
                "created": int(time.time()),
            }
        )
        return refund

    def _subscription(self, subscription_id: str, customer: str, unit_amount: int) -> dict:
        now = int(time.time())
        return {
            "id": subscription_id,
            "object": "subscription",
            "status": "active",
            "customer": customer,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "trial_end": None,
            "discounts": [],
            "metadata": {},
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{subscription_id}",
                        "object": "subscription_item",
                        "current_period_start": now,
                        "current_period_end": now + 30 * 86_400,
                        "price": {
                            "id": f"price_{subscription_id}",
                            "object": "price",
                            "product": f"prod_{subscription_id}",
                            "unit_amount": unit_amount,
                            "recurring": {"interval": "month"},
                        },
                    }
                ],
            },
        }

    def _subscriptions(self, method: str, subscription_id: str, params: dict) -> dict:
        # Subscriptions made outside the emulator (a test's fixtures) are known on first use.
        subscription = self.state.objects.get(subscription_id) or self.subscription_add(subscription_id)
        if method == "DELETE":
            subscription.update(status="canceled", canceled_at=int(time.time()))
        elif method == "POST":
            if "cancel_at_period_end" in params:
                subscription["cancel_at_period_end"] = params["cancel_at_period_end"] == "true"
            if "trial_end" in params:
                subscription["trial_end"] = int(params["trial_end"])
            if "discounts" in params:
                subscription["discounts"] = [entry["coupon"] for entry in params["discounts"]]
            if "metadata" in params:
                subscription["metadata"].update(params["metadata"])
            for item in params.get("items", []):
                price = subscription["items"]["data"][0]["price"]
                price["unit_amount"] = int(item["price_data"]["unit_amount"])
                price["recurring"] = {"interval": item["price_data"]["recurring"]["interval"]}
        return subscription

    # Customer portal and reconciliation: billing-portal sessions, charges and disputes, Stripe's list
    # endpoints with their pagination, and the test-facing changes made on Stripe's side.

    LISTED = {
        "subscriptions": "subscription",
        "invoices": "invoice",
        "refunds": "refund",
        "disputes": "dispute",
        "charges": "charge",
    }
    CLOSED_DISPUTE_STATUSES = ("won", "lost", "warning_closed", "prevented")

    def _portal_and_lists(self, method: str, parts: list, params: dict) -> dict | None:
        if method == "POST" and parts == ["billing_portal", "sessions"]:
            return self._portal_session(params)
        if method == "GET" and len(parts) == 1 and parts[0] in self.LISTED:
            return self._list(parts[0], params)
        if method == "GET" and len(parts) == 2 and parts[0] in ("charges", "disputes"):
            return self._get(parts[1], self.LISTED[parts[0]])
        return None

    def _portal_session(self, params: dict) -> dict:
        customer = self._get(params.get("customer", ""), "customer")
        session_id = self._id("bps")
        return self._store(
            {
                "id": session_id,
                "object": "billing_portal.session",
                "configuration": "bpc_emulated",
                "created": int(time.time()),
                "customer": customer["id"],
                "customer_account": None,
                "flow": None,
                "livemode": False,
                "locale": None,
                "on_behalf_of": None,
                "return_url": params.get("return_url"),
                "url": f"https://billing.stripe.com/p/session/test_{session_id}",
            }
        )

    def _list(self, resource: str, params: dict) -> dict:
        """A page of a list endpoint as Stripe answers it: newest first, `limit` (10 by default) after
        `starting_after`, `has_more`; filtered by `created` and the resource's own filters
        (subscriptions: `status`, canceled ones only with `all`, and `current_period_end`)."""
        kind = self.LISTED[resource]
        found = [obj for obj in reversed(self.state.objects.values()) if obj["object"] == kind]
        found = [obj for obj in found if self._range_matches(obj.get("created", 0), params.get("created"))]
        for name in ("customer", "subscription", "payment_intent", "charge"):
            if name in params:
                found = [obj for obj in found if self._reference(obj, name) == params[name]]
        if kind == "subscription":
            status = params.get("status")
            found = [
                obj
                for obj in found
                if (status == "all" or obj["status"] == status or (status is None and obj["status"] != "canceled"))
                and self._range_matches(obj["items"]["data"][0]["current_period_end"], params.get("current_period_end"))
            ]
        found.sort(key=lambda obj: obj.get("created", 0), reverse=True)
        if params.get("starting_after"):
            after = [obj["id"] for obj in found].index(params["starting_after"])
            found = found[after + 1 :]
        limit = int(params.get("limit", 10))
        page = [self._expanded(obj, params.get("expand") or []) for obj in found[:limit]]
        return {"object": "list", "url": f"/v1/{resource}", "has_more": len(found) > limit, "data": page}

    def _expanded(self, obj: dict, expand: list) -> dict:
        """The listed object with each `data.<field>` of `expand` in place of the id it names."""
        fields = [path.removeprefix("data.") for path in expand if path.startswith("data.")]
        named = {name: obj[name] for name in fields if isinstance(obj.get(name), str)}
        return {**obj, **{name: self.state.objects[value] for name, value in named.items()}}

    @staticmethod
    def _range_matches(value: int, bounds) -> bool:
        if bounds is None:
            return True
        if not isinstance(bounds, dict):
            return value == int(bounds)
        tests = {"gte": value.__ge__, "gt": value.__gt__, "lte": value.__le__, "lt": value.__lt__}
        return all(tests[op](int(bound)) for op, bound in bounds.items())

    @staticmethod
    def _reference(obj: dict, name: str):
        if name == "subscription" and obj["object"] == "invoice":
            return ((obj.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        return obj.get(name)

    def subscription_cancel(self, subscription_id: str) -> dict:
        """The subscription is canceled on Stripe's side (the Dashboard, the portal)."""
        with self._lock:
            subscription = self.state.objects[subscription_id]
            now = int(time.time())
            subscription.update(status="canceled", canceled_at=now, ended_at=now)
            return subscription

    def subscription_renew(self, subscription_id: str, *, paid: bool = True) -> dict:
        """Stripe starts the subscription's next period and bills it: the renewal invoice is paid, or
        (`paid=False`) its first attempt failed and it stays open. Returns the invoice."""
        with self._lock:
            subscription = self.state.objects[subscription_id]
            item = subscription["items"]["data"][0]
            start = item["current_period_end"]
            end = start + 30 * 86_400
            item.update(current_period_start=start, current_period_end=end)
            invoice = self._invoice(customer=subscription["customer"], currency="usd", metadata={})
            invoice["billing_reason"] = "subscription_cycle"
            invoice["parent"] = {
                "type": "subscription_details",
                "subscription_details": {"subscription": subscription_id, "metadata": {}},
            }
            self._line_add(invoice, item["price"]["unit_amount"], "Renewal")
            invoice["lines"]["data"][0]["period"] = {"start": start, "end": end}
            invoice.update(period_start=start - 30 * 86_400, period_end=start)
            if paid:
                self._invoice_paid(invoice)
            else:
                self._finalize(invoice)
                invoice.update(attempt_count=1, attempted=True)
            return invoice

    def charge_add(self, payment_intent: str, *, amount: int, customer: str = "", currency: str = "usd") -> dict:
        """A succeeded card charge of `payment_intent`."""
        return self._store(
            {
                "id": self._id("ch"),
                "object": "charge",
                "amount": amount,
                "amount_captured": amount,
                "amount_refunded": 0,
                "balance_transaction": None,
                "captured": True,
                "created": int(time.time()),
                "currency": currency,
                "customer": customer or None,
                "description": None,
                "disputed": False,
                "livemode": False,
                "metadata": {},
                "paid": True,
                "payment_intent": payment_intent,
                "payment_method": None,
                "refunded": False,
                "status": "succeeded",
            }
        )

    def refund_add(self, charge_id: str, *, amount: int) -> dict:
        """A refund made on Stripe's side (the Dashboard) of part or all of a charge."""
        with self._lock:
            charge = self._get(charge_id, "charge")
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            return self._store(
                {
                    "id": self._id("re"),
                    "object": "refund",
                    "amount": amount,
                    "balance_transaction": None,
                    "charge": charge_id,
                    "created": int(time.time()),
                    "currency": charge["currency"],
                    "metadata": {},
                    "payment_intent": charge["payment_intent"],
                    "reason": "requested_by_customer",
                    "status": "succeeded",
                }
            )

    def dispute_add(self, charge_id: str, *, status: str = "needs_response", reason: str = "fraudulent") -> dict:
        """The cardholder disputes a charge."""
        with self._lock:
            charge = self._get(charge_id, "charge")
            charge["disputed"] = True
            return self._store(
                {
                    "id": self._id("dp"),
                    "object": "dispute",
                    "amount": charge["amount"],
                    "balance_transactions": [],
                    "charge": charge_id,
                    "created": int(time.time()),
                    "currency": charge["currency"],
                    "is_charge_refundable": False,
                    "livemode": False,
                    "metadata": {},
                    "payment_intent": charge["payment_intent"],
                    "reason": reason,
                    "status": status,
                }
            )
