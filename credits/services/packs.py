"""Credit packs: staff define them, customers buy them through a checkout, the paid checkout grants
their credits once, and a refund of that payment takes back the refunded share of what is left.

What a purchase sold is fixed when its checkout opens: the amount (on the payment operation), the
pack, its credits and their expiry (in the operation's params, whose metadata also travels with the
Stripe session), so a pack changed or retired later never changes a purchase. A pack once paid for
keeps its terms (price, currency, credits, expiry) and is never deleted: staff retire it (is_active
off) and add another.
"""

from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_model_change, resource_type_of, snapshot
from billing_project.enums import EventType
from billing_project.errors import Conflict, NotFound, RuleViolation
from billing_project.money import credits_ceil, major_to_minor, minor_to_major, minor_to_text, minor_unit_exponent
from billing_project.outbound import notify
from credits import catalog
from credits.codes import ErrorCode
from credits.models import CreditAllocation, CreditConsumption, CreditPack, CreditSource, DeductionReason
from credits.selectors import credit_pack_sold
from credits.services.grants import allocations_claw_back, credit_grant
from payments.models import UNFINISHED_STATES, OperationKind, PaymentOperation
from payments.registry import EffectNotApplicable
from payments.services.checkouts import Checkout, checkout_open, checkout_run

# What a sale fixes: a pack with a paid purchase keeps these as they were sold.
PACK_TERMS = ("price", "currency", "credits", "credit_expiry_days")


# Staff: defining packs (the console and the staff API), each write audited in its transaction


def credit_pack_terms_check(*, price, currency: str) -> str:
    """The currency code as stored (lower case), once the price is one Stripe can charge in it
    (no fraction of the currency's minor unit: whole yen, cents of a dollar)."""
    code = (currency or "").lower()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise RuleViolation(
            "The currency is a three-letter ISO 4217 code.", code=ErrorCode.INVALID_PRICE, extra={"field": "currency"}
        )
    if price is None or price <= 0 or minor_to_major(major_to_minor(price, code), code) != price:
        places = minor_unit_exponent(code)
        raise RuleViolation(
            f"The price must be positive, with at most {places} decimal places in {code.upper()}.",
            code=ErrorCode.INVALID_PRICE,
            extra={"field": "price"},
        )
    return code


def _pack_locked(pack_id) -> CreditPack:
    try:
        pack = CreditPack.objects.select_for_update().filter(pk=pack_id).first()
    except ValidationError:  # not a UUID
        pack = None
    if pack is None:
        raise NotFound("No such credit pack.", code=ErrorCode.UNKNOWN_PACK)
    return pack


@transaction.atomic
def credit_pack_create(
    *,
    actor,
    name: str,
    credits: int,
    price,
    currency: str = "usd",
    credit_expiry_days: int | None = None,
    is_active: bool = True,
) -> CreditPack:
    if credits <= 0:
        raise RuleViolation("A pack grants a positive number of credits.", code=ErrorCode.INVALID_AMOUNT)
    pack = CreditPack.objects.create(
        name=name,
        credits=credits,
        price=price,
        currency=credit_pack_terms_check(price=price, currency=currency),
        credit_expiry_days=credit_expiry_days or None,
        is_active=is_active,
    )
    audit_model_change(action=AuditAction.CREATE, instance=pack, actor=actor)
    return pack


def credit_pack_terms_locked(*, pack: CreditPack, changes: dict) -> None:
    """Refuses a change of the terms of a pack already paid for (409 `pack_sold`)."""
    changed = sorted(name for name in PACK_TERMS if name in changes and changes[name] != getattr(pack, name))
    if changed and credit_pack_sold(pack=pack):
        raise Conflict(
            "This pack has been sold: its price, currency, credits and expiry stay as sold. "
            "Retire it (is_active false) and create another.",
            code=ErrorCode.PACK_SOLD,
            extra={"fields": changed},
        )


@transaction.atomic
def credit_pack_update(*, pack_id, actor, **changes) -> CreditPack:
    """Renames, retires or reactivates a pack; its terms change only while it has never been paid for."""
    pack = _pack_locked(pack_id)
    if "currency" in changes or "price" in changes:
        changes["currency"] = credit_pack_terms_check(
            price=changes.get("price", pack.price), currency=changes.get("currency", pack.currency)
        )
    if "credit_expiry_days" in changes:
        changes["credit_expiry_days"] = changes["credit_expiry_days"] or None
    if changes.get("credits", 1) <= 0:
        raise RuleViolation("A pack grants a positive number of credits.", code=ErrorCode.INVALID_AMOUNT)
    credit_pack_terms_locked(pack=pack, changes=changes)
    previous = snapshot(pack)
    for name, value in changes.items():
        setattr(pack, name, value)
    pack.save(update_fields=[*changes, "updated_at"])
    audit_model_change(action=AuditAction.UPDATE, instance=pack, previous_value=previous, actor=actor)
    return pack


def credit_pack_catalog_seed() -> int:
    """Loads the demo packs of credits.catalog. Idempotent: a pack of the same name is left as it is
    (staff may have edited or retired it). Returns how many were created."""
    created = 0
    for spec in catalog.CREDIT_PACKS:
        if CreditPack.objects.filter(name=spec["name"]).exists():
            continue
        CreditPack.objects.create(**spec)
        created += 1
    return created


# Customers: buying a pack


@dataclass(frozen=True)
class PackPurchase:
    operation: PaymentOperation
    checkout: Checkout


def _checkout_urls() -> dict:
    return {
        "success_url": settings.CREDIT_PACK_CHECKOUT_SUCCESS_URL or None,
        "cancel_url": settings.CREDIT_PACK_CHECKOUT_CANCEL_URL or None,
    }


def _sale_terms(pack: CreditPack) -> dict:
    """What a purchase of the pack sells, as the operation's metadata keeps it (string values)."""
    return {
        "pack_id": str(pack.pk),
        "pack_name": pack.name,
        "credits": str(pack.credits),
        "credit_expiry_days": str(pack.credit_expiry_days or ""),
    }


def credit_pack_purchase(*, user, pack_id) -> PackPurchase:
    """Buys an active pack: the operation is recorded with what it sells, then the checkout session
    is created with no transaction open. The offline provider completes it at once (the credits are
    granted before this returns); with Stripe the customer pays at the checkout URL and the webhook
    completes it. A retry while the same purchase is unpaid returns that checkout."""
    operation = _purchase_open(user=user, pack_id=pack_id)
    checkout = checkout_run(operation=operation)
    operation.refresh_from_db()
    return PackPurchase(operation=operation, checkout=checkout)


@transaction.atomic
def _purchase_open(*, user, pack_id) -> PaymentOperation:
    try:
        pack = CreditPack.objects.filter(pk=pack_id, is_active=True).first()
    except ValidationError:  # not a UUID
        pack = None
    if pack is None:
        raise NotFound(
            "No credit pack on sale with this id.", code=ErrorCode.UNKNOWN_PACK, extra={"pack": str(pack_id)}
        )
    terms = _sale_terms(pack)
    amount = major_to_minor(pack.price, pack.currency)
    unfinished = (
        PaymentOperation.objects.filter(
            kind=OperationKind.CREDIT_PACK_CHECKOUT,
            subject_type=resource_type_of(pack),
            subject_id=str(pack.pk),
            state__in=UNFINISHED_STATES,
            user=user,
        )
        .order_by("-created_at")
        .first()
    )
    if (
        unfinished is not None
        and unfinished.params.get("metadata") == terms
        and (unfinished.amount, unfinished.currency) == (amount, pack.currency)
    ):
        return unfinished
    return checkout_open(
        kind=OperationKind.CREDIT_PACK_CHECKOUT,
        user=user,
        subject=pack,
        amount_usd=pack.price,
        currency=pack.currency,
        description=f"{pack.name}: {pack.credits:,} credits",
        metadata=terms,
        plan_code="credit_pack",
        **_checkout_urls(),
    )


def _sold_terms(operation: PaymentOperation) -> tuple[int, int | None, str] | None:
    """(credits, expiry days, pack name) the operation sold; None when it names none (a checkout
    opened elsewhere whose metadata says only its kind)."""
    metadata = operation.params.get("metadata") or {}
    try:
        credits = int(metadata.get("credits", ""))
        days = int(metadata["credit_expiry_days"]) if metadata.get("credit_expiry_days") else None
    except (TypeError, ValueError):
        return None
    if credits <= 0 or (days is not None and days <= 0):
        return None
    return credits, days, metadata.get("pack_name") or "credit pack"


def _purchase_context(operation: PaymentOperation, **more) -> dict:
    metadata = operation.params.get("metadata") or {}
    return {
        "operation_id": str(operation.pk),
        "pack_id": metadata.get("pack_id"),
        "pack_name": metadata.get("pack_name", ""),
        "credits": int(metadata["credits"]) if str(metadata.get("credits", "")).isdigit() else None,
        "amount": minor_to_text(operation.amount, operation.currency),
        "currency": operation.currency,
        **more,
    }


def credit_pack_purchase_complete(*, operation: PaymentOperation, facts: dict) -> dict:
    """The effect of a paid pack checkout: the credits it sold, granted once (source `purchase`,
    linked to the operation; their expiry counts from now), and the buyer told once. Idempotent per
    operation (credit_grant): a repeated event grants nothing more."""
    terms = _sold_terms(operation)
    if terms is None or operation.user_id is None:
        raise EffectNotApplicable(f"Credit pack checkout {operation.pk} names no credits or no buyer here.")
    credits, days, pack_name = terms
    expires_at = timezone.now() + timedelta(days=days) if days else None
    result = credit_grant(
        user=operation.user,
        amount=credits,
        source=CreditSource.PURCHASE,
        expires_at=expires_at,
        reason=f"Bought credit pack '{pack_name}'",
        payment_operation_id=operation.pk,
    )
    allocation = result.allocation
    notify(
        user=operation.user,
        kind=EventType.CREDITS_PURCHASE_SUCCEEDED,
        occurrence=str(operation.pk),
        context=_purchase_context(
            operation,
            allocation_id=str(allocation.pk),
            expires_at=allocation.expires_at.isoformat() if allocation.expires_at else None,
            balance_after=result.balance_after,
        ),
    )
    return {"object_id": str(allocation.pk), "credits": allocation.amount, "granted": result.created}


def credit_pack_purchase_failed(*, operation: PaymentOperation) -> None:
    """A pack checkout that ends unpaid (expired, its delayed payment failed) grants nothing and
    holds nothing: the buyer is told once."""
    if operation.user_id is None:
        return
    notify(
        user=operation.user,
        kind=EventType.CREDITS_PURCHASE_FAILED,
        occurrence=str(operation.pk),
        context=_purchase_context(operation, reason=operation.last_error),
    )


# Refunds and disputes of a pack's payment (registered with payments.registry; payments matches the
# event to the payment and calls these in the transaction that records it, under the payment's lock)


def _purchase_of(payment) -> CreditAllocation | None:
    if payment.operation_id is None:
        return None
    return CreditAllocation.objects.filter(payment_operation_id=payment.operation_id).first()


def _taken_back(allocation: CreditAllocation) -> int:
    """Credits of the purchase refunds have already taken back."""
    taken = CreditConsumption.objects.filter(
        source__allocation=allocation, deduction__reason=DeductionReason.ADMIN_ADJUSTMENT
    ).aggregate(total=Sum("amount"))["total"]
    return taken or 0


def _claw_back_to(payment, *, owed_in_total, reason: str) -> dict:
    allocation = _purchase_of(payment)
    if allocation is None:
        return {"allocation_id": None, "clawed_back": 0}
    owed = owed_in_total(allocation) - _taken_back(allocation)
    clawed = 0
    if owed > 0:
        clawed = allocations_claw_back(
            user_id=allocation.user_id, allocation_ids=[allocation.pk], reason=reason, limit=owed
        )
    return {"allocation_id": str(allocation.pk), "clawed_back": clawed}


def credit_pack_refund_recorded(*, payment) -> dict:
    """Each change of the refunded amount: the refunded share of the credits sold is taken back,
    ceil(credits * refunded / paid) in all (rounded up, so refunding every cent takes every credit),
    less what earlier refunds took, and never more than is left of the purchase (spent credits stay
    spent, credits held for a request in flight stay with it; a later refund takes what it could
    not). A refund the provider reports failed lowers the share: what was taken stays taken (the
    payments policy) and is left to staff."""
    refunded, paid = payment.amount_refunded, payment.amount
    return _claw_back_to(
        payment,
        owed_in_total=lambda allocation: min(
            credits_ceil(Fraction(allocation.amount * refunded, paid)) if paid else allocation.amount,
            allocation.amount,
        ),
        reason=f"Refund of {minor_to_text(refunded, payment.currency)} {payment.currency.upper()} "
        "of a credit pack purchase",
    )


def credit_pack_payment_refunded(*, payment) -> dict:
    """A full refund or a lost dispute: everything left of the purchase is taken back."""
    return _claw_back_to(
        payment,
        owed_in_total=lambda allocation: allocation.amount,
        reason="A credit pack purchase refunded in full or lost in a dispute",
    )


def credit_pack_payment_disputed(*, payment) -> dict:
    """An open dispute is recorded only: the credits stay spendable (holding them back would need a
    freeze the balance has no notion of, and most disputes of small purchases are won or withdrawn);
    a lost dispute takes back what is left, as a full refund does."""
    allocation = _purchase_of(payment)
    return {"allocation_id": str(allocation.pk) if allocation else None, "held": False}


def credit_pack_dispute_won(*, payment) -> dict:
    """A won dispute: nothing was taken, nothing to give back."""
    allocation = _purchase_of(payment)
    return {"allocation_id": str(allocation.pk) if allocation else None, "restored": False}
