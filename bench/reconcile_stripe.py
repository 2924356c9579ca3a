"""How long `reconcile_stripe` takes to read and compare a window, against the Stripe emulator.

    .venv/bin/python bench/reconcile_stripe.py [--subscriptions 2000]

It creates a scratch database next to BENCH_DATABASE_URL (default: the local PostgreSQL), migrates it
and seeds `--subscriptions` users, each with a Stripe-billed subscription, its paid first invoice and
the payment received for it (known by its charge), the same objects on the emulator, and one in ten
with a difference planted: cancelled at Stripe, the invoice without its number here, or another
amount at Stripe; a refund and a dispute at Stripe of one charge in ten. It then runs the report (no
fix) and prints the wall time of the Stripe reads and of the comparison, the Stripe requests (list
pages of 100) and the database queries of the comparison, and the differences found. The scratch
database is dropped at the end.
"""

import argparse
import os
import sys
import time
from datetime import timedelta

import harness

ROOT = harness.ROOT


def seed(count: int, emulator) -> None:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from payments.models import OperationKind, Payment, WebhookProvider
    from subscriptions.models import BillingInvoice, InvoiceStatus, Subscription, SubscriptionStatus

    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"reconcile{index}@example.com", email=f"reconcile{index}@example.com")
        for index in range(count)
    )
    now = timezone.now()
    subscriptions, invoices, payments = [], [], []
    for index, user in enumerate(users):
        stripe_subscription = emulator.subscription_add(f"sub_bench{index:06d}", customer=f"cus_bench{index:06d}")
        item = stripe_subscription["items"]["data"][0]
        stripe_invoice = emulator.subscription_renew(stripe_subscription["id"])
        item.update(current_period_start=int(now.timestamp()), current_period_end=int(now.timestamp()) + 2_592_000)
        if index % 10 == 1:
            emulator.subscription_cancel(stripe_subscription["id"])
        if index % 10 == 3:
            stripe_invoice.update(amount_due=1500, amount_paid=1500)
        charge = emulator.charge_add(None, amount=1900, customer=stripe_subscription["customer"])
        if index % 10 == 4:
            emulator.refund_add(charge["id"], amount=500)
        if index % 10 == 5:
            emulator.dispute_add(charge["id"])
        subscription = Subscription(
            user=user,
            tier="pro",
            status=SubscriptionStatus.ACTIVE,
            base_price_usd="19.00",
            monthly_credit_allocation=20_000,
            current_period_start=now,
            current_period_end=now + timedelta(days=30),
            stripe_customer_id=stripe_subscription["customer"],
            stripe_subscription_id=stripe_subscription["id"],
        )
        subscriptions.append(subscription)
        invoices.append(
            BillingInvoice(
                user=user,
                subscription=subscription,
                subtotal_usd="19.00",
                amount_due_usd="19.00",
                amount_paid_usd="19.00",
                amount_due=1900,
                amount_paid=1900,
                status=InvoiceStatus.PAID,
                period_start=now,
                period_end=now + timedelta(days=30),
                stripe_invoice_id=stripe_invoice["id"],
                number="" if index % 10 == 2 else stripe_invoice["number"],
                hosted_invoice_url=stripe_invoice["hosted_invoice_url"],
                invoice_pdf=stripe_invoice["invoice_pdf"],
                paid_at=now,
            )
        )
        payments.append(
            Payment(
                user=user,
                kind=OperationKind.SUBSCRIPTION_CHECKOUT,
                object_id=str(subscription.pk),
                provider=WebhookProvider.STRIPE,
                amount=1900,
                currency="usd",
                stripe_charge_id=charge["id"],
                stripe_invoice_id=stripe_invoice["id"],
                paid_at=now,
            )
        )
    Subscription.objects.bulk_create(subscriptions)
    BillingInvoice.objects.bulk_create(invoices)
    Payment.objects.bulk_create(payments)


def run(count: int) -> None:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, override_settings
    from django.utils import timezone

    from payments.tests.stripe_emulator import StripeEmulator
    from subscriptions.services import reconcile

    call_command("migrate", verbosity=0)
    emulator = StripeEmulator().serve()
    seed(count, emulator)
    with override_settings(STRIPE_SECRET_KEY="sk_test_" + "0" * 32, STRIPE_API_BASE=emulator.url):
        started = time.perf_counter()
        state = reconcile.stripe_state_fetch(since=timezone.now() - timedelta(days=1))
        fetched = time.perf_counter()
        with CaptureQueriesContext(connection) as queries:
            found = reconcile.differences_find(state=state)
        compared = time.perf_counter()
    print(f"objects at Stripe: {state.counts()}")
    print(f"Stripe reads: {len(emulator.requests)} requests, {fetched - started:.2f} s")
    print(f"comparison: {len(queries)} queries, {compared - fetched:.3f} s")
    kinds = {}
    for difference in found:
        kinds[difference.field] = kinds.get(difference.field, 0) + 1
    print(f"differences: {len(found)} {kinds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=2000)
    arguments = parser.parse_args()
    with harness.scratch_database("bench_reconcile") as url:
        os.environ.update(DJANGO_SETTINGS_MODULE="billing_project.settings", DATABASE_URL=url, LOG_LEVEL="WARNING")
        run(arguments.subscriptions)


if __name__ == "__main__":
    main()
