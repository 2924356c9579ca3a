"""Throughput and latency of the Stripe webhook endpoint, under gunicorn on PostgreSQL.

    .venv/bin/python bench/webhooks.py [--duration 10] [--connections 16] [--workers N] [--subscriptions 500]

It creates a scratch database next to BENCH_DATABASE_URL (default: the local PostgreSQL), migrates and
seeds it (catalog, users each with a Pro subscription billed by Stripe), starts gunicorn with the
production configuration (gunicorn.conf.py, DEBUG off, a webhook secret) and loads it from a separate
process over loopback, while a thread of this process seals the audit chain every 5 s as the beat
job does in production (AUDIT_SEAL_ON_WRITE off). Two phases:

- `paid`: signed `invoice.paid` events (billing_reason subscription_cycle), each a new event id and a
  new invoice renewing one subscription for its next period (new invoice, payment, credit allocation,
  payment event, audit rows), spread round-robin over all subscriptions. They are built before the
  load starts and signed as they are sent.
- `replay`: duplicate deliveries of events already processed (re-signed each time, as Stripe does),
  answered from the stored answer (the shared cache, else the event's row).

Bodies are the real-shaped event of subscriptions/tests/fixtures/stripe/invoice.paid.json. It prints,
for each phase, events per second and p50/p99 latency, then what the database holds and what the
sealer did (the chain sealed to its end and verified). The scratch database is dropped at the end.
BENCH_PORT picks the port (8766), BENCH_GUNICORN_ARGS adds gunicorn options.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import time
import urllib.request
import uuid

import harness

ROOT = harness.ROOT
HOST, PORT = "127.0.0.1", int(os.environ.get("BENCH_PORT", 8766))
PATH = "/api/v1/billing/webhooks/stripe/"
FIXTURE = ROOT / "subscriptions/tests/fixtures/stripe/invoice.paid.json"
SAMPLE = {"customer": "cus_QhSample0001", "subscription": "sub_1PqSample0001", "invoice": "in_1PqSample0001"}
MONTH_SECONDS = 30 * 24 * 3600
REPLAY_POOL = 64
# Renewals built ahead per second of load: above what the server answers on a small machine.
RENEWALS_AHEAD = 250


def server_environment(database_url: str, webhook_secret: str, port: int = PORT) -> dict:
    return {
        **harness.server_environment(database_url, port=port, redis_database=15),
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        # Stripe's key is required in production; events are only received here, nothing is sent.
        "STRIPE_SECRET_KEY": "sk_test_" + secrets.token_hex(16),
        # Audit rows are sealed by the beat job, as with a broker in production (harness.Sealer).
        "AUDIT_SEAL_ON_WRITE": "false",
    }


def prepare(count: int) -> dict:
    """Migrates and seeds the scratch database (in this process): `count` users on Pro, each paid
    through a Stripe checkout as its webhook records it. Returns each subscription's Stripe ids and
    the end of its current period (where its next invoice starts)."""
    harness.database_migrate_and_seed()
    from django.contrib.auth import get_user_model

    from payments.services.inbox import webhook_event_accept
    from subscriptions.models import Subscription
    from subscriptions.services import subscription_start_free

    subscriptions = []
    for index in range(count):
        email = f"hooks{index}@example.com"
        user = get_user_model().objects.create_user(username=email, email=email, password=None)
        subscription_start_free(user=user)
        tag = f"{index:06d}{uuid.uuid4().hex[:10]}"
        session = {
            "id": f"cs_bench_{tag}",
            "object": "checkout.session",
            "mode": "subscription",
            "client_reference_id": str(user.pk),
            "customer": f"cus_{tag}",
            "subscription": f"sub_{tag}",
            "invoice": f"in_{tag}",
            "payment_intent": None,
            "metadata": {"kind": "subscription", "tier": "pro", "billing_cycle": "monthly"},
            "amount_total": 1900,
            "currency": "usd",
            "payment_status": "paid",
            "status": "complete",
        }
        event = {"id": f"evt_bench_{tag}", "type": "checkout.session.completed", "data": {"object": session}}
        webhook_event_accept(event_id=event["id"], event_type=event["type"], event=event)
        subscription = Subscription.objects.get(checkout_session_id=session["id"])
        subscriptions.append(
            {
                "customer": subscription.stripe_customer_id,
                "subscription": subscription.stripe_subscription_id,
                "next_start": int(subscription.current_period_end.timestamp()),
            }
        )
    return {"subscriptions": subscriptions}


class Events:
    """Builds renewal events from the fixture: each a new event id and invoice for the subscription's
    next period (periods advance per subscription, so every event renews)."""

    def __init__(self, subscriptions: list[dict]):
        self.template = FIXTURE.read_text()
        self.subscriptions = [dict(subscription) for subscription in subscriptions]
        self.turn = 0

    def next_renewal(self) -> str:
        subscription = self.subscriptions[self.turn % len(self.subscriptions)]
        self.turn += 1
        tag = uuid.uuid4().hex
        text = self.template
        for key, sample in SAMPLE.items():
            text = text.replace(sample, subscription[key] if key != "invoice" else f"in_{tag}")
        text = text.replace("pi_3PqSample0001", f"pi_{tag}").replace("ch_3PqSample0001", f"ch_{tag}")
        event = json.loads(text)
        start = subscription["next_start"]
        subscription["next_start"] = start + MONTH_SECONDS
        event["id"], event["created"] = f"evt_{tag}", int(time.time())
        invoice = event["data"]["object"]
        invoice["lines"]["data"][0]["period"] = {"start": start, "end": start + MONTH_SECONDS}
        invoice["period_start"], invoice["period_end"] = start - MONTH_SECONDS, start
        return json.dumps(event)


def signature(payload: str, secret: str) -> str:
    """Stripe's `Stripe-Signature` header for the payload sent now: `t=<time>,v1=<HMAC-SHA256 of
    "<time>.<body>">`."""
    timestamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def delivered(payload: str, secret: str, *, port: int) -> int:
    """One delivery, signed now; the status it was answered."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}{PATH}",
        data=payload.encode(),
        headers={"Content-Type": "application/json", "Stripe-Signature": signature(payload, secret)},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def signed_request(payload: str, secret: str) -> bytes:
    """A POST as Stripe sends it, signed now."""
    body = payload.encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {HOST}\r\nStripe-Signature: {signature(payload, secret)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(reader, writer, data: bytes) -> tuple[int, bool, bytes]:
    """Sends one request and reads its response: (status, whether the server closes, body)."""
    writer.write(data)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("closed before answering")
    length, closes = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            closes = True
    body = await reader.readexactly(length)
    return int(status_line.split()[1]), closes, body


async def connection_loop(make_request, port: int, deadline: float, latencies: list, tally: dict) -> None:
    """One client connection, reopened whenever the server closes it (gunicorn's sync workers close
    after each response)."""
    reader = writer = None
    while time.perf_counter() < deadline:
        data = make_request()
        started = time.perf_counter()
        if writer is None:
            reader, writer = await asyncio.open_connection(HOST, port)
        try:
            status, closes, body = await exchange(reader, writer, data)
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            reader = writer = None
            continue
        latencies.append(time.perf_counter() - started)
        tally[status] = tally.get(status, 0) + 1
        if b'"replayed":true' in body:
            tally["replayed"] = tally.get("replayed", 0) + 1
        if closes:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def run_load(spec: dict, results) -> None:
    """The load generator, in its own process: `connections` connections for `duration` s."""
    events = Events(spec["subscriptions"])
    secret, port = spec["webhook_secret"], spec["port"]
    pool: list[str] = []
    counter = iter(range(10**9))
    # The renewals are built before the load (the loader shares the machine's cores with the server);
    # each is signed as it is sent, as Stripe does.
    ahead: list[str] = []
    if spec["phase"] == "paid":
        ahead = [events.next_renewal() for _ in range(int((spec["warmup"] + spec["duration"]) * RENEWALS_AHEAD))]
        ahead.reverse()

    def next_request():
        if spec["phase"] == "replay":
            return signed_request(pool[next(counter) % len(pool)], secret)
        return signed_request(ahead.pop() if ahead else events.next_renewal(), secret)

    async def main():
        if spec["phase"] == "replay":  # the events to deliver again, delivered once first
            pool.extend(events.next_renewal() for _ in range(REPLAY_POOL))
            reader, writer = None, None
            for payload in pool:
                reader, writer = await asyncio.open_connection(HOST, port)
                status, _, _ = await exchange(reader, writer, signed_request(payload, secret))
                writer.close()
                assert status == 200, status
        latencies, tally = [], {}
        warmup = time.perf_counter() + spec["warmup"]
        await asyncio.gather(*(connection_loop(next_request, port, warmup, [], {}) for _ in range(spec["connections"])))
        began = time.perf_counter()
        deadline = began + spec["duration"]
        await asyncio.gather(
            *(connection_loop(next_request, port, deadline, latencies, tally) for _ in range(spec["connections"]))
        )
        return latencies, tally, time.perf_counter() - began

    latencies, tally, elapsed = asyncio.run(main())
    results.put({"latencies": latencies, "tally": tally, "elapsed": elapsed, "subscriptions": events.subscriptions})


def measure(spec: dict) -> dict:
    """One phase's figures; `subscriptions` in them is where each subscription's next renewal starts."""
    results = multiprocessing.Queue()
    process = multiprocessing.Process(target=run_load, args=(spec, results))
    process.start()
    outcome = results.get()
    process.join()
    latencies = sorted(outcome["latencies"])
    count = len(latencies)
    return {
        "requests": count,
        "per_second": count / outcome["elapsed"],
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": harness.p99(latencies) * 1000,
        "tally": outcome["tally"],
        "subscriptions": outcome["subscriptions"],
    }


def stored_figures() -> str:
    from django.db.models import Count

    from credits.models import CreditAllocation
    from payments.models import PaymentEvent, WebhookEvent
    from subscriptions.models import BillingInvoice

    by_status = dict(WebhookEvent.objects.values_list("status").annotate(n=Count("id")).order_by())
    return (
        f"stored: webhook events {by_status}, paid invoices {BillingInvoice.objects.filter(status='paid').count()}, "
        f"allocations {CreditAllocation.objects.count()}, payment events {PaymentEvent.objects.count()}"
    )


def run_phase(phase: str, data: dict, webhook_secret: str, arguments) -> None:
    spec = {
        **data,
        "phase": phase,
        "port": PORT,
        "webhook_secret": webhook_secret,
        "connections": arguments.connections,
        "duration": arguments.duration,
        "warmup": arguments.warmup,
    }
    figures = measure(spec)
    data["subscriptions"] = figures["subscriptions"]
    label = "invoice.paid, new events" if phase == "paid" else "replayed deliveries"
    print(
        f"{label}: {figures['per_second']:,.1f} events/s, p50 {figures['p50_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms, responses {figures['tally']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of load per phase.")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--subscriptions", type=int, default=500)
    parser.add_argument("--phases", default="paid,replay")
    arguments = parser.parse_args()

    webhook_secret = f"whsec_{secrets.token_hex(24)}"
    with harness.scratch_database("bench_webhooks") as database_url:
        environment = server_environment(database_url, webhook_secret)
        os.environ.update(environment)
        sys.path.insert(0, str(ROOT))
        data = prepare(arguments.subscriptions)
        with harness.serving(environment, workers=arguments.workers, port=PORT):
            print(
                f"gunicorn: {arguments.workers} sync workers; load: {arguments.connections} connections, "
                f"{arguments.duration:.0f} s per phase after {arguments.warmup:.0f} s warm-up; "
                f"{arguments.subscriptions} Stripe-billed subscriptions"
            )
            with harness.Sealer() as sealer:
                for phase in arguments.phases.split(","):
                    run_phase(phase, data, webhook_secret, arguments)
        print(stored_figures())
        print(sealer.report())


if __name__ == "__main__":
    main()
