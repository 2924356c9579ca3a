"""Invoices keep Stripe's number, hosted page and PDF, from the invoice events (signed with the
stripe SDK and posted to the webhook endpoint), and the customer sees them in me/invoices/."""

import json
import uuid

import pytest
from django.urls import reverse

from payments.tests.conftest import client_for, stripe_subscriber
from payments.tests.stripe_emulator import event_payload
from subscriptions.models import BillingInvoice
from subscriptions.tests.conftest import deliver
from subscriptions.tests.factories import BillingInvoiceFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tier_catalog")]


def invoice_event(event_type: str, invoice: dict) -> dict:
    return json.loads(event_payload(event_type, invoice, event_id=f"evt_{uuid.uuid4().hex}"))


def test_me_invoices_shows_stripes_number_page_and_pdf_after_invoice_paid(stripe_http, webhook_client):
    subscription = stripe_subscriber(stripe_http, "documents@example.com")
    renewal = stripe_http.subscription_renew(subscription.stripe_subscription_id)

    delivered = deliver(webhook_client, invoice_event("invoice.paid", renewal))

    assert delivered.status_code == 200, delivered.content
    listed = client_for(subscription.user).get("/api/v1/me/invoices/")
    assert listed.status_code == 200
    (shown,) = [row for row in listed.json()["results"] if row["number"]]
    assert shown["status"] == "paid"
    assert (shown["number"], shown["hosted_invoice_url"], shown["invoice_pdf"]) == (
        renewal["number"],
        renewal["hosted_invoice_url"],
        renewal["invoice_pdf"],
    )
    assert renewal["number"] and renewal["hosted_invoice_url"].startswith("https://invoice.stripe.com/")


def test_a_failed_invoice_keeps_its_page_where_the_customer_pays_it(stripe_http, webhook_client):
    subscription = stripe_subscriber(stripe_http, "failed@example.com")
    invoice = stripe_http.invoice_open(
        "in_failed_documents",
        customer=subscription.stripe_customer_id or "",
        amount=1900,
        subscription=subscription.stripe_subscription_id,
    )

    delivered = deliver(webhook_client, invoice_event("invoice.payment_failed", invoice))

    assert delivered.status_code == 200, delivered.content
    row = BillingInvoice.objects.get(stripe_invoice_id="in_failed_documents")
    assert (row.status, row.number, row.hosted_invoice_url, row.invoice_pdf) == (
        "open",
        invoice["number"],
        invoice["hosted_invoice_url"],
        invoice["invoice_pdf"],
    )


def test_an_invoice_event_without_its_documents_never_blanks_them(stripe_http, webhook_client):
    subscription = stripe_subscriber(stripe_http, "keep@example.com")
    renewal = stripe_http.subscription_renew(subscription.stripe_subscription_id)
    deliver(webhook_client, invoice_event("invoice.paid", renewal))
    bare = {**renewal, "number": None, "hosted_invoice_url": None, "invoice_pdf": None}

    again = deliver(webhook_client, invoice_event("invoice.payment_succeeded", bare))

    assert again.status_code == 200, again.content
    row = BillingInvoice.objects.get(stripe_invoice_id=renewal["id"])
    assert (row.number, row.hosted_invoice_url, row.invoice_pdf) == (
        renewal["number"],
        renewal["hosted_invoice_url"],
        renewal["invoice_pdf"],
    )


def test_the_console_lists_invoices_with_their_number_and_links(admin_client):
    BillingInvoiceFactory(
        number="EMU-0042",
        hosted_invoice_url="https://invoice.stripe.com/i/in_console",
        invoice_pdf="https://pay.stripe.com/invoice/in_console/pdf",
    )

    page = admin_client.get(reverse("admin:subscriptions_billinginvoice_changelist"))

    assert page.status_code == 200
    html = page.content.decode()
    assert "EMU-0042" in html
    assert '<a href="https://invoice.stripe.com/i/in_console" target="_blank" rel="noopener">page</a>' in html
    assert '<a href="https://pay.stripe.com/invoice/in_console/pdf" target="_blank" rel="noopener">PDF</a>' in html
