"""Charges, refunds, disputes and invoice payments in the shapes of the pinned Stripe API version
(`stripe.api_version`), with only the fields its object definitions declare (checked in
test_refunds.py), for webhook tests that Stripe itself would send."""

import time
import uuid


def _list(url: str, data: list) -> dict:
    return {"object": "list", "data": data, "has_more": False, "url": url}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def refund(*, charge: str, payment_intent: str, amount: int, currency: str, status="succeeded", refund_id=None):
    return {
        "id": refund_id or new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "charge": charge,
        "created": int(time.time()),
        "currency": currency,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": "requested_by_customer",
        "status": status,
    }


def charge(*, charge_id: str, payment_intent: str, amount: int, currency: str, refunds=(), customer=None) -> dict:
    """A captured charge and the refunds listed on it; `amount_refunded` is their total, as Stripe keeps it."""
    refunded = sum(entry["amount"] for entry in refunds if entry["status"] in ("pending", "succeeded"))
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": refunded,
        "captured": True,
        "created": int(time.time()),
        "currency": currency,
        "customer": customer,
        "disputed": False,
        "livemode": False,
        "metadata": {},
        "paid": True,
        "payment_intent": payment_intent,
        "refunded": refunded == amount,
        "refunds": _list(f"/v1/charges/{charge_id}/refunds", list(refunds)),
        "status": "succeeded",
    }


def dispute(*, dispute_id: str, charge: str, payment_intent: str, amount: int, currency: str, status: str) -> dict:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge,
        "created": int(time.time()),
        "currency": currency,
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": "fraudulent",
        "status": status,
    }


def invoice_payment(*, invoice: str, payment_intent: str, amount: int, currency: str) -> dict:
    return {
        "id": new_id("inpay"),
        "object": "invoice_payment",
        "amount_paid": amount,
        "amount_requested": amount,
        "created": int(time.time()),
        "currency": currency,
        "invoice": invoice,
        "is_default": True,
        "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": payment_intent},
        "status": "paid",
        "status_transitions": {"canceled_at": None, "paid_at": int(time.time())},
    }
