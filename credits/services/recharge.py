"""Auto-recharge: a user's saved card buys a credit pack when their spendable credits fall below a
threshold, at most `monthly_cap` of money per calendar month (UTC, in the pack's currency).

The usage path only notices: a deduction that leaves the spendable balance below the threshold the
balance row carries (`auto_recharge_below`, no query of its own) queues `credits.tasks.auto_recharge_run`
after commit. The task (`auto_recharge_attempt`) decides under the lock of the user's `AutoRecharge`
row, opens one `credit_recharge` payment operation whose subject is that row (payments allows one
unfinished charge per subject), and runs it with no transaction open. The operation's effect, applied
once when it settles (its own run, the invoice's webhook, or reconcile), grants the pack's credits or
counts the failure; AUTO_RECHARGE_MAX_FAILURES failures in a row pause auto-recharge until the user
(or staff) enables it again.

A card needing authentication leaves the operation waiting for the customer (the invoice's webhook
settles it if they confirm): it is told at once, and it counts as a failure.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record, resource_type_of
from billing_project.enums import EventType
from billing_project.errors import RuleViolation
from billing_project.money import major_to_minor, minor_to_major
from billing_project.outbound import notify
from credits.codes import ErrorCode
from credits.models import AutoRecharge, CreditPack, CreditSource
from credits.selectors import credits_available
from credits.services.accounts import LockedAccount, recharge_queue
from credits.services.grants import credit_grant
from payments import stripe_api
from payments.models import UNFINISHED_STATES, OperationEffect, OperationKind, PaymentOperation
from payments.services.customers import customer_id_of
from payments.services.operations import (
    OperationInProgress,
    operation_open,
    operation_run,
    operation_unfinished_for,
    stripe_active,
)

logger = logging.getLogger(__name__)

DECLINED, ACTION_REQUIRED = "declined", "action_required"


# Reads


def auto_recharge_get(*, user_id) -> AutoRecharge | None:
    return AutoRecharge.objects.select_related("pack").filter(user_id=user_id).first()


def _month_start(now):
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def recharges_charged_this_month(*, setting: AutoRecharge, currency: str, now=None) -> int:
    """Minor units of `currency` the month's recharges charged or are charging: succeeded (refunded
    ones too: the cap is on what was charged) and unfinished ones."""
    total = (
        PaymentOperation.objects.filter(
            kind=OperationKind.CREDIT_RECHARGE,
            subject_type=resource_type_of(setting),
            subject_id=str(setting.pk),
            currency=currency,
            created_at__gte=_month_start(now or timezone.now()),
        )
        .filter(Q(state__in=UNFINISHED_STATES) | Q(effect=OperationEffect.SUCCEEDED))
        .aggregate(total=Sum("amount"))["total"]
    )
    return total or 0


# Settings


@dataclass(frozen=True)
class AutoRechargeChange:
    enabled: bool
    threshold: int
    pack_id: object
    monthly_cap: Decimal


def _snapshot(setting: AutoRecharge | None) -> dict | None:
    if setting is None or setting.pk is None:
        return None
    return {
        "enabled": setting.enabled,
        "threshold": setting.threshold,
        "pack_id": str(setting.pack_id),
        "monthly_cap": str(setting.monthly_cap),
        "paused_at": setting.paused_at.isoformat() if setting.paused_at else None,
        "consecutive_failures": setting.consecutive_failures,
    }


@transaction.atomic
def auto_recharge_set(*, user, change: AutoRechargeChange, actor, audited: bool = False) -> AutoRecharge:
    """Sets the user's auto-recharge (the user's own `PUT`, or staff's with `audited`, which writes
    its audit row in this transaction). Enabling needs an active pack, a cap that allows at least one
    pack, and, with Stripe as the provider, the user's Stripe customer (the card their checkout
    saved; Stripe's answer to the first charge says whether it still has one). Enabling a paused
    auto-recharge resumes it. A user already below the new threshold gets a recharge check at once."""
    pack = CreditPack.objects.filter(pk=change.pack_id).first()
    if pack is None:
        raise RuleViolation("No such credit pack.", code=ErrorCode.UNKNOWN_PACK, extra={"pack": str(change.pack_id)})
    if change.enabled and not pack.is_active:
        raise RuleViolation("This credit pack is no longer offered.", code=ErrorCode.PACK_INACTIVE)
    if change.monthly_cap < pack.price:
        raise RuleViolation(
            f"The monthly cap must allow at least one pack ({pack.price} {pack.currency.upper()}).",
            code=ErrorCode.CAP_BELOW_PACK_PRICE,
            extra={"pack_price": str(pack.price), "currency": pack.currency},
        )
    if change.enabled and stripe_active() and not customer_id_of(user_id=user.pk):
        raise RuleViolation(
            "Auto-recharge charges your saved card: buy credits or subscribe with a card first.",
            code=ErrorCode.NO_SAVED_CARD,
        )
    # The row's lock orders concurrent changes and recharge checks of this user (then the balance's).
    setting = AutoRecharge.objects.select_for_update().filter(user=user).first()
    before = _snapshot(setting)
    if setting is None:
        setting = AutoRecharge(user=user)
    if change.enabled and (setting.paused_at or not setting.enabled):
        setting.paused_at, setting.pause_reason, setting.consecutive_failures = None, "", 0
    setting.enabled = change.enabled
    setting.threshold = change.threshold
    setting.pack = pack
    setting.monthly_cap = change.monthly_cap
    setting.updated_by = actor
    setting.save()
    armed = _arm(setting)
    if audited:
        audit_record(
            action=AuditAction.UPDATE if before else AuditAction.CREATE,
            resource_type=resource_type_of(setting),
            resource_id=str(setting.pk),
            previous_value=before,
            new_value=_snapshot(setting),
            actor=actor,
        )
    if armed and credits_available(user_id=user.pk)["balance"] < setting.threshold:
        transaction.on_commit(lambda: recharge_queue(user_id=user.pk), robust=True)
    return setting


def _arm(setting: AutoRecharge) -> bool:
    """Puts the row's threshold on the balance row while it is enabled and not paused, None otherwise."""
    armed = setting.enabled and setting.paused_at is None
    account = LockedAccount.open(user_id=setting.user_id, now=timezone.now(), expire_overdue=False)
    account.auto_recharge_arm(setting.threshold if armed else None)
    account.flush()
    return armed


def _pause(setting: AutoRecharge, *, reason: str, occurrence: str, context: dict) -> None:
    setting.paused_at = timezone.now()
    setting.pause_reason = reason[:255]
    setting.save(update_fields=["paused_at", "pause_reason", "updated_at"])
    _arm(setting)
    notify(
        user=setting.user,
        kind=EventType.CREDITS_RECHARGE_PAUSED,
        occurrence=occurrence,
        context={**context, "pause_reason": setting.pause_reason},
    )


# The recharge


def auto_recharge_attempt(*, user_id) -> PaymentOperation | None:
    """Recharges the user once if it is still due (the task behind every deduction below the
    threshold): opens the operation, then runs it with no transaction open. None when nothing is
    due. A decline or a provider error settles the operation failed (its effect counts it); a
    provider that does not answer leaves it to `reconcile_payments`."""
    operation = _recharge_open(user_id=user_id)
    if operation is None:
        return None
    try:
        operation = operation_run(operation_id=operation.pk)
    except (stripe_api.PaymentDeclined, stripe_api.ProviderError) as refused:
        logger.info("auto-recharge %s for user %s refused: %s", operation.pk, user_id, refused)
    except (stripe_api.ProviderUnavailable, OperationInProgress) as unfinished:
        logger.warning("auto-recharge %s for user %s left for reconcile: %s", operation.pk, user_id, unfinished)
    operation.refresh_from_db()
    if operation.state in UNFINISHED_STATES and operation.stripe_objects.get("awaiting") == "customer_action":
        _action_required_note(operation_id=operation.pk)
    return operation


@transaction.atomic
def _recharge_open(*, user_id) -> PaymentOperation | None:
    now = timezone.now()
    # The lock makes the checks below and the opening one decision: concurrent checks of this user wait
    # here and then find the operation this one opened.
    setting = (
        AutoRecharge.objects.select_for_update(of=("self",))
        .select_related("pack", "user")
        .filter(user_id=user_id)
        .first()
    )
    if setting is None or not setting.enabled or setting.paused_at is not None:
        return None
    if credits_available(user_id=user_id)["balance"] >= setting.threshold:
        return None
    if operation_unfinished_for(kind=OperationKind.CREDIT_RECHARGE, subject=setting) is not None:
        return None
    pack = setting.pack
    if not pack.is_active:
        _pause(
            setting,
            reason="The credit pack is no longer offered: choose another one.",
            occurrence=f"{setting.pk}:pack-retired:{pack.pk}",
            context=_context(setting, pack=pack),
        )
        return None
    price = major_to_minor(pack.price, pack.currency)
    charged = recharges_charged_this_month(setting=setting, currency=pack.currency, now=now)
    if charged + price > major_to_minor(setting.monthly_cap, pack.currency):
        return None
    try:
        with transaction.atomic():  # the one-unfinished-charge constraint backs the check above
            return operation_open(
                kind=OperationKind.CREDIT_RECHARGE,
                user=setting.user,
                subject=setting,
                amount_usd=pack.price,
                currency=pack.currency,
                description=f"Auto-recharge: {pack.name} ({pack.credits} credits)",
                params={
                    "pack_id": str(pack.pk),
                    "credits": pack.credits,
                    "credit_expiry_days": pack.credit_expiry_days,
                    "metadata": {"kind": "credit_recharge", "pack_id": str(pack.pk)},
                },
                stripe_customer_id=customer_id_of(user_id=user_id) or "",
            )
    except IntegrityError:
        return None


def _context(setting: AutoRecharge, *, pack: CreditPack, operation: PaymentOperation | None = None) -> dict:
    context = {
        "pack": pack.name,
        "credits": pack.credits,
        "amount": str(pack.price),
        "currency": pack.currency.upper(),
        "threshold": setting.threshold,
        "monthly_cap": str(setting.monthly_cap),
    }
    if operation is not None:
        context |= {
            "operation_id": str(operation.pk),
            "amount": str(minor_to_major(operation.amount, operation.currency)),
            "currency": operation.currency.upper(),
            "credits": operation.params.get("credits", pack.credits),
        }
    return context


# The operation's effect (registered in credits.apps)


def _setting_locked(operation: PaymentOperation) -> AutoRecharge | None:
    # The AutoRecharge row before the balance, as everywhere else: no deadlock with a recharge check.
    return (
        AutoRecharge.objects.select_for_update(of=("self",))
        .select_related("pack", "user")
        .filter(pk=operation.subject_id)
        .first()
    )


def recharge_succeeded(*, operation: PaymentOperation, facts: dict) -> dict:
    """The paid recharge: the pack's credits, once per operation (source `purchase`, linked to the
    payment), the failure count reset, the user told."""
    setting = _setting_locked(operation)
    params = operation.params
    expiry_days = params.get("credit_expiry_days")
    granted = credit_grant(
        user=operation.user,
        amount=params["credits"],
        source=CreditSource.PURCHASE,
        expires_at=timezone.now() + timedelta(days=expiry_days) if expiry_days else None,
        reason=operation.description,
        payment_operation_id=operation.pk,
    )
    if setting is not None:
        if setting.consecutive_failures:
            setting.consecutive_failures = 0
            setting.save(update_fields=["consecutive_failures", "updated_at"])
        notify(
            user=operation.user,
            kind=EventType.CREDITS_RECHARGE_SUCCEEDED,
            occurrence=str(operation.pk),
            context={**_context(setting, pack=setting.pack, operation=operation), "balance": granted.balance_after},
        )
    return {
        "object_id": str(granted.allocation.pk),
        "allocation_id": str(granted.allocation.pk),
        "credits": params["credits"],
        "balance_after": granted.balance_after,
    }


def recharge_failed(*, operation: PaymentOperation) -> None:
    """A recharge that did not go through (declined, or never confirmed by the customer)."""
    setting = _setting_locked(operation)
    if setting is not None:
        _failure_count(setting, operation, reason=DECLINED)


@transaction.atomic
def _action_required_note(*, operation_id) -> None:
    operation = PaymentOperation.objects.get(pk=operation_id)
    setting = _setting_locked(operation)
    if setting is not None:
        _failure_count(setting, operation, reason=ACTION_REQUIRED)


def _failure_count(setting: AutoRecharge, operation: PaymentOperation, *, reason: str) -> None:
    """Tells the user once per operation and counts the failure once per operation (a recharge
    waiting for the customer that later fails is one failure); pauses at AUTO_RECHARGE_MAX_FAILURES."""
    context = {
        **_context(setting, pack=setting.pack, operation=operation),
        "reason": reason,
        "detail": operation.last_error[:500],
    }
    told = notify(
        user=setting.user, kind=EventType.CREDITS_RECHARGE_FAILED, occurrence=str(operation.pk), context=context
    )
    if told is None:
        return
    setting.consecutive_failures += 1
    setting.save(update_fields=["consecutive_failures", "updated_at"])
    if setting.paused_at is None and setting.consecutive_failures >= settings.AUTO_RECHARGE_MAX_FAILURES:
        _pause(
            setting,
            reason=f"{setting.consecutive_failures} recharges in a row failed.",
            occurrence=str(operation.pk),
            context=context,
        )
