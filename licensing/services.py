"""Writes to licenses: purchase and staff issue, device activations, upgrades, staff transitions.

Every change to a license's devices, coverage or status locks the license row first
(`select_for_update`) and reads what it decides on under that lock, so seat counts and the daily
device-change limit stay exact under concurrency. Keys appear in logs and audit rows masked only.
"""

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.redaction import mask_license_key
from audit.services import audit_model_change, audit_record, resource_type_of, snapshot
from billing_project.enums import EventType
from billing_project.errors import Conflict, NotFound, RuleViolation, TooManyRequests
from billing_project.money import minor_to_major, usd_round
from billing_project.outbound import event_emit, notify
from licensing import keys, versions
from licensing.codes import ErrorCode, InvalidReason
from licensing.models import (
    DEFAULT_MAX_ACTIVATIONS,
    LicenseActivation,
    LicenseStatus,
    PerpetualLicense,
    UpgradeStatus,
    VersionUpgrade,
)
from licensing.selectors import (
    license_key_checked,
    license_not_found,
    license_upgrade_offer,
    version_checked,
)
from payments.models import OperationKind, PaymentOperation
from payments.registry import EffectNotApplicable
from payments.services.checkouts import Checkout, checkout_open, checkout_run
from payments.services.operations import operation_unfinished_for

logger = logging.getLogger(__name__)

DEVICE_CHANGE_WINDOW = timedelta(hours=24)
KEY_ATTEMPTS = 3


def license_created_emit(*, license_: PerpetualLicense, source: str) -> None:
    """license.created: a license became active (`source`: purchase, staff or coupon). The key is
    a secret and stays out of it; its owner reads it from `me/licenses/`."""
    event_emit(
        type=EventType.LICENSE_CREATED,
        subject=f"license:{license_.pk}",
        data={
            "id": str(license_.pk),
            "user_id": str(license_.user_id),
            "status": license_.status,
            "source": source,
            "purchased_version": license_.purchased_version,
            "eligible_until_version": license_.eligible_until_version,
            "max_activations": license_.max_activations,
            "byok_enabled": license_.byok_enabled,
            "purchase_price_usd": f"{license_.purchase_price_usd:.2f}",
            "activated_at": license_.activated_at.isoformat() if license_.activated_at else None,
        },
        user=license_.user,
    )


def _license_create(**fields) -> PerpetualLicense:
    """A license with a fresh random key. The unique constraint is the guarantee; a collision
    (odds about 2**-74 per key) is retried with another key inside a savepoint."""
    attempts_left = KEY_ATTEMPTS
    while True:
        key = keys.key_generate()
        try:
            with transaction.atomic():
                return PerpetualLicense.objects.create(license_key=key, **fields)
        except IntegrityError:
            attempts_left -= 1
            if not attempts_left or not PerpetualLicense.objects.filter(license_key=key).exists():
                raise


def _checkout_urls() -> dict:
    return {
        "success_url": settings.LICENSE_CHECKOUT_SUCCESS_URL or None,
        "cancel_url": settings.LICENSE_CHECKOUT_CANCEL_URL or None,
    }


def _version_on_sale(version: str | None) -> str:
    """The version a customer may buy: a release of the current major line, not past the current one."""
    current = versions.version_parse(settings.LICENSE_CURRENT_VERSION)
    if version is None:
        return str(current)
    wanted = version_checked(version, field="version")
    if wanted.major != current.major or wanted > current:
        raise RuleViolation(
            f"Only {current.major}.x releases up to {current} are on sale.", code=ErrorCode.VERSION_NOT_ON_SALE
        )
    return str(wanted)


def _lock_owned(*, user, license_key: str) -> PerpetualLicense:
    """The caller's license, locked until the transaction ends; someone else's key is not found."""
    key = license_key_checked(license_key)
    license_ = PerpetualLicense.objects.select_for_update().filter(license_key=key, user=user).first()
    if license_ is None:
        raise license_not_found()
    return license_


def _lock_for_checkout(*, user_id, license_id) -> PerpetualLicense | None:
    """The license a checkout paid for, locked; None when it names none that exists (nothing was
    pending here: the purchase creates it)."""
    try:
        license_ = PerpetualLicense.objects.select_for_update().filter(pk=license_id).first() if license_id else None
    except ValidationError:  # not a UUID
        license_ = None
    if license_ is not None and license_.user_id != user_id:
        raise EffectNotApplicable(f"The checkout names license {license_id}, which is not its user's.")
    return license_


def _license_of_checkout(*, operation: PaymentOperation, version: str | None) -> PerpetualLicense:
    """A paid checkout whose license is not recorded here (its metadata names none, or one that is
    gone): the license it paid for, created active for the checkout's user."""
    try:
        purchased_version = _version_on_sale(version)
    except RuleViolation:
        purchased_version = settings.LICENSE_CURRENT_VERSION
    return _license_create(
        user_id=operation.user_id,
        purchase_price_usd=usd_round(settings.LICENSE_PRICE_USD),
        purchased_version=purchased_version,
        eligible_until_version=versions.eligible_until_for(purchased_version),
        status=LicenseStatus.PENDING,
    )


@dataclass(frozen=True)
class LicensePurchase:
    license: PerpetualLicense
    checkout: Checkout


def license_purchase(*, user, version: str | None = None) -> LicensePurchase:
    """Buys a license at LICENSE_PRICE_USD for `version` (default LICENSE_CURRENT_VERSION).

    The license is created pending, with its key, and its checkout recorded; then the checkout
    session is created (no transaction open). Completing the checkout activates it: at once with
    the offline provider, from Stripe's webhook otherwise. A pending license cannot be activated on
    a device. A retry while the same purchase is unpaid returns that license and checkout.
    """
    license_, operation = _license_purchase_open(user=user, version=version)
    checkout = checkout_run(operation=operation)
    license_.refresh_from_db()
    return LicensePurchase(license=license_, checkout=checkout)


@transaction.atomic
def _license_purchase_open(*, user, version: str | None) -> tuple[PerpetualLicense, PaymentOperation]:
    purchased_version = _version_on_sale(version)
    unfinished = operation_unfinished_for(kind=OperationKind.LICENSE_CHECKOUT, subject=user)
    if unfinished is not None and unfinished.params["metadata"].get("version") == purchased_version:
        return PerpetualLicense.objects.get(pk=unfinished.params["metadata"]["license_id"]), unfinished
    price = usd_round(settings.LICENSE_PRICE_USD)
    license_ = _license_create(
        user=user,
        purchase_price_usd=price,
        purchased_version=purchased_version,
        eligible_until_version=versions.eligible_until_for(purchased_version),
        status=LicenseStatus.PENDING,
    )
    operation = checkout_open(
        kind=OperationKind.LICENSE_CHECKOUT,
        user=user,
        subject=user,
        amount_usd=price,
        description=f"Perpetual license, version {versions.version_parse(purchased_version).major}.x",
        metadata={"license_id": license_.pk, "version": purchased_version},
        plan_code="perpetual",
        **_checkout_urls(),
    )
    return license_, operation


def license_purchase_complete(*, operation: PaymentOperation, facts: dict) -> dict:
    """The effect of a paid license checkout: activates the pending license (or, when nothing was
    pending here, the license it paid for, created now) and records what was paid. Idempotent: a
    license that is no longer pending (a repeated event) is returned unchanged."""
    metadata = operation.params.get("metadata", {})
    session_id = facts.get("session_id") or operation.stripe_checkout_session_id
    license_ = _lock_for_checkout(user_id=operation.user_id, license_id=metadata.get("license_id"))
    if license_ is None:
        already = PerpetualLicense.objects.filter(checkout_session_id=session_id, user_id=operation.user_id).first()
        license_ = already or _license_of_checkout(operation=operation, version=metadata.get("version"))
    if license_.status != LicenseStatus.PENDING:
        if license_.checkout_session_id != session_id:
            raise EffectNotApplicable(
                f"Checkout {session_id} paid for license {license_.pk}, which is {license_.status}."
            )
        return {"object_id": str(license_.pk)}
    license_.status = LicenseStatus.ACTIVE
    license_.activated_at = timezone.now()
    license_.checkout_session_id = session_id
    currency = (facts.get("currency") or operation.currency).lower()
    # Named for USD (the contract); another currency's amount is kept as is, never converted.
    license_.purchase_price_usd = usd_round(minor_to_major(facts.get("amount", operation.amount), currency))
    license_.purchase_currency = currency
    license_.save(
        update_fields=[
            "status",
            "activated_at",
            "checkout_session_id",
            "purchase_price_usd",
            "purchase_currency",
            "updated_at",
        ]
    )
    license_created_emit(license_=license_, source="purchase")
    logger.info("license %s activated by checkout %s", mask_license_key(license_.license_key), session_id)
    return {"object_id": str(license_.pk)}


CHECKOUT_UNPAID_REASON = "Its checkout ended unpaid"


def _pending_of_checkout(pending, operation: PaymentOperation, metadata_key: str):
    """The row of `pending` (the user's pending licenses or upgrades) the checkout's metadata names,
    locked; None when it names none (a checkout opened from Stripe's metadata may name anything)."""
    row_id = operation.params.get("metadata", {}).get(metadata_key)
    if not row_id:
        return None
    try:
        return pending.select_for_update(of=("self",)).filter(pk=row_id).first()
    except ValidationError:  # not a UUID: nothing of ours
        return None


def license_purchase_failed(*, operation: PaymentOperation) -> None:
    """A license checkout that ends unpaid (its session expired, its delayed payment failed) ends
    the license it left pending: expired, never activatable, audited. A payment that still arrives
    for it later is returned (the operation has failed), so the license is not brought back.
    A license purchase holds no coupon; the checkout's one-off Stripe coupon goes with its session."""
    license_ = _pending_of_checkout(
        PerpetualLicense.objects.filter(user_id=operation.user_id, status=LicenseStatus.PENDING),
        operation,
        "license_id",
    )
    if license_ is None:
        return
    previous = snapshot(license_)
    license_.status = LicenseStatus.EXPIRED
    license_.status_reason = f"{CHECKOUT_UNPAID_REASON}: {operation.last_error}" if operation.last_error else ""
    license_.save(update_fields=["status", "status_reason", "updated_at"])
    audit_model_change(action=AuditAction.TRANSITION, instance=license_, previous_value=previous)


def license_upgrade_failed(*, operation: PaymentOperation) -> None:
    """An upgrade checkout that ends unpaid leaves its pending upgrade failed (audited); the
    license keeps what it covered."""
    upgrade = _pending_of_checkout(
        VersionUpgrade.objects.filter(license__user_id=operation.user_id, status=UpgradeStatus.PENDING),
        operation,
        "upgrade_id",
    )
    if upgrade is None:
        return
    previous = snapshot(upgrade)
    upgrade.status = UpgradeStatus.FAILED
    upgrade.save(update_fields=["status", "updated_at"])
    audit_model_change(action=AuditAction.TRANSITION, instance=upgrade, previous_value=previous)


def full_keys_shown(*, license_ids: list) -> None:
    """Full license keys are secrets: every answer that shows them to staff (the staff API, the
    console) is an audited read, naming the licenses shown."""
    if license_ids:
        audit_record(
            action=AuditAction.READ,
            resource_type="licensing.perpetuallicense",
            resource_id=str(license_ids[0]) if len(license_ids) == 1 else "",
            new_value={"full_license_keys": [str(license_id) for license_id in license_ids]},
        )


@transaction.atomic
def license_issue(
    *,
    user,
    actor,
    purchased_version: str | None = None,
    purchase_price_usd: Decimal = Decimal("0.00"),
    max_activations: int = DEFAULT_MAX_ACTIVATIONS,
    byok_enabled: bool = True,
) -> PerpetualLicense:
    """Staff issue an active license with a fresh key, without a checkout (a sale made elsewhere or
    a goodwill license: the price is what was paid outside, 0 by default). Audited in its transaction."""
    if purchased_version is None:
        purchased_version = settings.LICENSE_CURRENT_VERSION
    purchased_version = str(version_checked(purchased_version, field="purchased_version"))
    license_ = _license_create(
        user=user,
        purchase_price_usd=usd_round(purchase_price_usd),
        purchased_version=purchased_version,
        eligible_until_version=versions.eligible_until_for(purchased_version),
        max_activations=max_activations,
        byok_enabled=byok_enabled,
        status=LicenseStatus.ACTIVE,
        activated_at=timezone.now(),
    )
    audit_model_change(action=AuditAction.CREATE, instance=license_, actor=actor)
    license_created_emit(license_=license_, source="staff")
    return license_


COUPON_ELIGIBLE_UNTIL_VERSION = "999.0.0"


def license_grant_by_coupon(*, user, coupon_code: str) -> PerpetualLicense:
    """The perpetual license a BYOK-migration coupon grants (SPEC 4): active at once, price 0,
    every future version, BYOK on, and the coupon named as how it was acquired. The coupon's
    redemption row records the grant; the caller's transaction holds both."""
    license_ = _license_create(
        user=user,
        purchase_price_usd=Decimal("0.00"),
        purchased_version=settings.LICENSE_CURRENT_VERSION,
        eligible_until_version=COUPON_ELIGIBLE_UNTIL_VERSION,
        byok_enabled=True,
        acquisition_coupon_code=coupon_code,
        status=LicenseStatus.ACTIVE,
        activated_at=timezone.now(),
    )
    license_created_emit(license_=license_, source="coupon")
    return license_


@dataclass(frozen=True)
class ActivationResult:
    activation: LicenseActivation
    activations_used: int
    max_activations: int
    created: bool = False


def _device(activation: LicenseActivation) -> dict:
    return {
        "activation_id": str(activation.pk),
        "device_fingerprint": activation.device_fingerprint,
        "device_name": activation.device_name,
        "os": activation.os_type,
        "app_version": activation.app_version,
        "activated_at": activation.activated_at,
        "last_seen_at": activation.last_seen_at,
    }


@dataclass(frozen=True)
class _DeviceHistory:
    """A license's devices replayed in time order: the most ever active at once (the seats used so
    far), and when it changed devices: every deactivation, and every activation into a seat another
    device had freed. The first activation into each seat is setting the license up, not a change."""

    seats_used: int
    changes: list


def _device_history(license_: PerpetualLicense) -> _DeviceHistory:
    events = []
    for activated_at, deactivated_at in license_.activations.values_list("activated_at", "deactivated_at"):
        events.append((activated_at, 1))
        if deactivated_at is not None:
            events.append((deactivated_at, -1))
    active = seats_used = 0
    changes = []
    for moment, step in sorted(events):  # at one instant a deactivation sorts first: a swap refills a seat
        active += step
        if step > 0 and active > seats_used:
            seats_used = active
        else:
            changes.append(moment)
    return _DeviceHistory(seats_used=seats_used, changes=changes)


def _device_change_allow(*, history: _DeviceHistory, now) -> None:
    """Refuses (429) a device change when the license already made LICENSE_DEVICE_CHANGES_PER_DAY
    of them in the last 24 hours. Runs under the license lock, so concurrent changes see each other."""
    limit = max(1, settings.LICENSE_DEVICE_CHANGES_PER_DAY)
    changes = [moment for moment in history.changes if moment > now - DEVICE_CHANGE_WINDOW]
    if len(changes) < limit:
        return
    # One more change fits once the oldest (len - limit + 1) changes have left the window.
    frees_at = changes[len(changes) - limit] + DEVICE_CHANGE_WINDOW
    retry_after = max(1, math.ceil((frees_at - now).total_seconds()))
    raise TooManyRequests(
        f"This license changed devices {len(changes)} times in the last 24 hours (limit {limit}).",
        code=ErrorCode.DEVICE_CHANGE_LIMIT,
        extra={"retry_after": retry_after, "limit": limit},
    )


def _require_active(license_: PerpetualLicense) -> None:
    if license_.status != LicenseStatus.ACTIVE:
        raise Conflict(
            f"This license is {license_.status}.",
            code=ErrorCode.LICENSE_NOT_ACTIVE,
            extra={"license_status": license_.status},
        )


class ActivationLimitReached(Conflict):
    """Every seat of the license is taken (409 `activation_limit_reached`, the active devices listed)."""

    def __init__(self, license_: PerpetualLicense, active: list[LicenseActivation]):
        super().__init__(
            f"All {license_.max_activations} activations are in use: deactivate a device first.",
            code=ErrorCode.ACTIVATION_LIMIT_REACHED,
            extra={
                "max_activations": license_.max_activations,
                "activations_used": len(active),
                "active_devices": [_device(activation) for activation in active],
            },
        )
        self.license_ = license_


def activation_create(
    *, user, license_key: str, device_fingerprint: str, device_name: str = "", os_type: str = "", app_version: str = ""
) -> ActivationResult:
    """Activates a device on the caller's active license.

    Idempotent per device: an already active device is answered with its activation and costs no
    seat and no device change; nor does a first activation into a seat never used before. Refused
    with 409 when every seat is taken (the active devices are listed), and the owner told of it
    (license.device_limit_reached, once a day per license however often the client retries), and
    with 429 past the daily device-change limit.
    """
    try:
        return _activation_create(
            user=user,
            license_key=license_key,
            device_fingerprint=device_fingerprint,
            device_name=device_name,
            os_type=os_type,
            app_version=app_version,
        )
    except ActivationLimitReached as refused:
        # The refusal rolled its transaction back: the notification is written in one of its own.
        device_limit_reached_notify(
            user=user, license_=refused.license_, activations_used=refused.extra["activations_used"]
        )
        raise


@transaction.atomic
def device_limit_reached_notify(*, user, license_: PerpetualLicense, activations_used: int) -> None:
    today = timezone.now().date().isoformat()
    notify(
        user=user,
        kind=EventType.LICENSE_DEVICE_LIMIT_REACHED,
        occurrence=f"{license_.pk}:{today}",
        subject=f"license:{license_.pk}",
        context={
            "license_id": str(license_.pk),
            "license_key_masked": mask_license_key(license_.license_key),
            "max_activations": license_.max_activations,
            "activations_used": activations_used,
            "date": today,
        },
    )


@transaction.atomic
def _activation_create(
    *, user, license_key: str, device_fingerprint: str, device_name: str, os_type: str, app_version: str
) -> ActivationResult:
    if app_version:
        version_checked(app_version, field="app_version")
    # The license row is the lock: the seat count and the change count below are exact under it.
    license_ = _lock_owned(user=user, license_key=license_key)
    _require_active(license_)
    now = timezone.now()
    active = list(license_.activations.filter(deactivated_at__isnull=True).order_by("activated_at"))
    current = next((activation for activation in active if activation.device_fingerprint == device_fingerprint), None)
    if current is not None:
        current.last_seen_at = now
        current.device_name = device_name or current.device_name
        current.os_type = os_type or current.os_type
        current.app_version = app_version or current.app_version
        current.save(update_fields=["last_seen_at", "device_name", "os_type", "app_version", "updated_at"])
        return ActivationResult(
            activation=current, activations_used=len(active), max_activations=license_.max_activations
        )
    if len(active) >= license_.max_activations:
        raise ActivationLimitReached(license_, active)
    history = _device_history(license_)
    if len(active) < history.seats_used:  # a seat another device freed: a device change
        _device_change_allow(history=history, now=now)
    activation = LicenseActivation.objects.create(
        license=license_,
        device_fingerprint=device_fingerprint,
        device_name=device_name,
        os_type=os_type,
        app_version=app_version,
        activated_at=now,
        last_seen_at=now,
    )
    return ActivationResult(
        activation=activation, activations_used=len(active) + 1, max_activations=license_.max_activations, created=True
    )


@transaction.atomic
def activation_deactivate(*, user, license_key: str, device_fingerprint: str) -> ActivationResult:
    """Frees the device's seat (any license status: a suspended license may still free devices).
    The row is kept with its deactivated_at; a deactivation counts as a device change."""
    license_ = _lock_owned(user=user, license_key=license_key)
    activation = license_.activations.filter(device_fingerprint=device_fingerprint, deactivated_at__isnull=True).first()
    if activation is None:
        raise NotFound("This device is not active on this license.", code=ErrorCode.ACTIVATION_NOT_FOUND)
    now = timezone.now()
    _device_change_allow(history=_device_history(license_), now=now)
    activation.deactivated_at = now
    activation.save(update_fields=["deactivated_at", "updated_at"])
    used = license_.activations.filter(deactivated_at__isnull=True).count()
    return ActivationResult(activation=activation, activations_used=used, max_activations=license_.max_activations)


@dataclass(frozen=True)
class ValidationResult:
    valid: bool
    reason: InvalidReason | str | None = None


@transaction.atomic
def license_validate(*, user, license_key: str, device_fingerprint: str, app_version: str) -> ValidationResult:
    """May this device run this app version? Never refuses the question: a bad key is an answer
    (`bad_checksum` is decided before any lookup). A valid answer records the device as seen."""
    parsed = version_checked(app_version, field="app_version")
    key = keys.key_normalize(license_key)
    if not keys.key_is_valid(key):
        return ValidationResult(valid=False, reason=InvalidReason.BAD_CHECKSUM)
    license_ = PerpetualLicense.objects.filter(license_key=key, user=user).first()
    if license_ is None:
        return ValidationResult(valid=False, reason=InvalidReason.UNKNOWN_KEY)
    if license_.status != LicenseStatus.ACTIVE:
        return ValidationResult(valid=False, reason=license_.status)
    activation = license_.activations.filter(device_fingerprint=device_fingerprint, deactivated_at__isnull=True).first()
    if activation is None:
        return ValidationResult(valid=False, reason=InvalidReason.NOT_ACTIVATED_ON_DEVICE)
    if parsed > versions.version_parse(license_.eligible_until_version):
        return ValidationResult(valid=False, reason=InvalidReason.VERSION_NOT_COVERED)
    activation.last_seen_at = timezone.now()
    activation.app_version = str(parsed)
    activation.save(update_fields=["last_seen_at", "app_version", "updated_at"])
    return ValidationResult(valid=True)


@dataclass(frozen=True)
class UpgradePurchase:
    upgrade: VersionUpgrade
    license: PerpetualLicense
    checkout: Checkout


def _from_version(license_: PerpetualLicense) -> str:
    """Where an upgrade starts: the purchased version within the bought line, else the line's first release."""
    covered_major = versions.version_parse(license_.eligible_until_version).major
    if versions.version_parse(license_.purchased_version).major == covered_major:
        return license_.purchased_version
    return f"{covered_major}.0.0"


def license_upgrade(*, user, license_key: str) -> UpgradePurchase:
    """Buys the caller's license an upgrade to the next major line, priced now (list price, less the
    early-upgrade discount within LICENSE_EARLY_UPGRADE_DAYS of purchase). The upgrade is created
    pending and its checkout recorded, then the session created; its completion raises the
    license's eligible_until_version. A retry while the upgrade is unpaid returns the same checkout."""
    upgrade, operation = _license_upgrade_open(user=user, license_key=license_key)
    checkout = checkout_run(operation=operation)
    upgrade.refresh_from_db()
    license_ = PerpetualLicense.objects.get(pk=upgrade.license_id)
    return UpgradePurchase(upgrade=upgrade, license=license_, checkout=checkout)


@transaction.atomic
def _license_upgrade_open(*, user, license_key: str) -> tuple[VersionUpgrade, PaymentOperation]:
    license_ = _lock_owned(user=user, license_key=license_key)
    _require_active(license_)
    unfinished = operation_unfinished_for(kind=OperationKind.LICENSE_UPGRADE_CHECKOUT, subject=license_)
    if unfinished is not None:
        return VersionUpgrade.objects.get(pk=unfinished.params["metadata"]["upgrade_id"]), unfinished
    offer = license_upgrade_offer(license_=license_)
    if offer is None:
        raise Conflict(
            f"This license already covers the current release {settings.LICENSE_CURRENT_VERSION}.",
            code=ErrorCode.UPGRADE_NOT_AVAILABLE,
        )
    upgrade = VersionUpgrade.objects.create(
        license=license_,
        from_version=_from_version(license_),
        to_version=offer.to_version,
        upgrade_price_usd=offer.quote.price_usd,
        discount_usd=offer.quote.discount_usd,
        status=UpgradeStatus.PENDING,
    )
    operation = checkout_open(
        kind=OperationKind.LICENSE_UPGRADE_CHECKOUT,
        user=user,
        subject=license_,
        amount_usd=offer.quote.price_usd,
        description=f"Upgrade of a perpetual license to version {versions.version_parse(offer.to_version).major}.x",
        metadata={"license_id": license_.pk, "upgrade_id": upgrade.pk},
        plan_code="perpetual",
        **_checkout_urls(),
    )
    return upgrade, operation


def license_upgrade_complete(*, operation: PaymentOperation, facts: dict) -> dict:
    """The effect of a paid upgrade checkout: marks the upgrade paid and raises the license's
    eligible_until_version to the end of the new line (never lowers it). Idempotent: a completed
    upgrade is returned unchanged."""
    metadata = operation.params.get("metadata", {})
    # The license row is the lock, as for every change to what a license covers.
    license_ = _lock_for_checkout(user_id=operation.user_id, license_id=metadata.get("license_id"))
    upgrade = license_.upgrades.filter(pk=metadata.get("upgrade_id")).first()
    if upgrade is None:
        raise EffectNotApplicable("The checkout names no upgrade of this license.")
    if upgrade.status == UpgradeStatus.COMPLETED:
        return {"object_id": str(upgrade.pk)}
    upgrade.status = UpgradeStatus.COMPLETED
    upgrade.purchased_at = timezone.now()
    upgrade.checkout_session_id = facts.get("session_id") or operation.stripe_checkout_session_id
    paid, currency = facts.get("amount", operation.amount), facts.get("currency") or operation.currency
    upgrade.upgrade_price_usd = usd_round(minor_to_major(paid, currency))
    upgrade.save(update_fields=["status", "purchased_at", "checkout_session_id", "upgrade_price_usd", "updated_at"])
    eligible_until = versions.eligible_until_for(upgrade.to_version)
    if not versions.version_covered(eligible_until_version=license_.eligible_until_version, version=eligible_until):
        license_.eligible_until_version = eligible_until
        license_.save(update_fields=["eligible_until_version", "updated_at"])
    return {"object_id": str(upgrade.pk)}


def _transition(*, license_id, reason: str, allowed_from: set, to: LicenseStatus) -> tuple[PerpetualLicense, dict]:
    """Moves a license between statuses under its lock; returns it and its snapshot from before.
    The caller writes the audit row in the same transaction."""
    reason = (reason or "").strip()
    if not reason:
        raise RuleViolation("A reason is required.", code=ErrorCode.REASON_REQUIRED)
    license_ = PerpetualLicense.objects.select_for_update().filter(pk=license_id).first()
    if license_ is None:
        raise NotFound("No license with this id.", code=ErrorCode.LICENSE_NOT_FOUND)
    if license_.status not in allowed_from:
        raise Conflict(
            f"A {license_.status} license cannot be moved to {to}.",
            code=ErrorCode.TRANSITION_NOT_ALLOWED,
            extra={"license_status": license_.status},
        )
    previous = snapshot(license_)
    license_.status = to
    license_.status_reason = reason
    license_.save(update_fields=["status", "status_reason", "updated_at"])
    return license_, previous


@transaction.atomic
def license_suspend(*, license_id, actor, reason: str) -> PerpetualLicense:
    """active -> suspended (reversible). Devices stay activated but stop validating."""
    license_, previous = _transition(
        license_id=license_id,
        reason=reason,
        allowed_from={LicenseStatus.ACTIVE},
        to=LicenseStatus.SUSPENDED,
    )
    audit_model_change(action=AuditAction.SUSPEND, instance=license_, previous_value=previous, actor=actor)
    return license_


@transaction.atomic
def license_reactivate(*, license_id, actor, reason: str) -> PerpetualLicense:
    """suspended -> active."""
    license_, previous = _transition(
        license_id=license_id,
        reason=reason,
        allowed_from={LicenseStatus.SUSPENDED},
        to=LicenseStatus.ACTIVE,
    )
    audit_model_change(action=AuditAction.ACTIVATE, instance=license_, previous_value=previous, actor=actor)
    return license_


@transaction.atomic
def license_revoke(*, license_id, actor, reason: str) -> PerpetualLicense:
    """Any status but revoked -> revoked, for good: every active device is deactivated."""
    license_, previous = _transition(
        license_id=license_id,
        reason=reason,
        allowed_from={LicenseStatus.PENDING, LicenseStatus.ACTIVE, LicenseStatus.SUSPENDED, LicenseStatus.EXPIRED},
        to=LicenseStatus.REVOKED,
    )
    now = timezone.now()
    deactivated = 0
    # One save per device (at most max_activations) so each keeps its object history.
    for activation in license_.activations.filter(deactivated_at__isnull=True):
        activation.deactivated_at = now
        activation.save(update_fields=["deactivated_at", "updated_at"])
        deactivated += 1
    audit_record(
        action=AuditAction.REVOKE,
        resource_type=resource_type_of(license_),
        resource_id=str(license_.pk),
        previous_value=previous,
        new_value={**snapshot(license_), "devices_deactivated": deactivated},
        actor=actor,
    )
    return license_


# Refunds and disputes of a license's payment (registered with payments.registry; payments matches
# the event to the payment): a full refund or a lost dispute revokes the license, an open dispute
# suspends it, a won dispute reactivates a license its dispute suspended.

REFUNDED_REASON = "Its payment was refunded in full"
DISPUTED_REASON = "Its payment is disputed"


def _license_paid_by(payment) -> PerpetualLicense | None:
    try:
        return PerpetualLicense.objects.filter(pk=payment.object_id).first() if payment.object_id else None
    except ValidationError:  # not a license id: nothing of ours
        return None


def license_payment_refunded(*, payment) -> dict:
    license_ = _license_paid_by(payment)
    if license_ is None or license_.status == LicenseStatus.REVOKED:
        return {"license_id": str(license_.pk) if license_ else None, "revoked": False}
    license_revoke(license_id=license_.pk, actor=None, reason=REFUNDED_REASON)
    return {"license_id": str(license_.pk), "revoked": True}


def license_payment_disputed(*, payment) -> dict:
    license_ = _license_paid_by(payment)
    suspended = license_ is not None and license_.status == LicenseStatus.ACTIVE
    if suspended:
        license_suspend(license_id=license_.pk, actor=None, reason=DISPUTED_REASON)
    return {"license_id": str(license_.pk) if license_ else None, "suspended": suspended}


def license_dispute_won(*, payment) -> dict:
    license_ = _license_paid_by(payment)
    restored = (
        license_ is not None
        and license_.status == LicenseStatus.SUSPENDED
        and license_.status_reason == DISPUTED_REASON
    )
    if restored:
        license_reactivate(license_id=license_.pk, actor=None, reason="The dispute of its payment was won")
    return {"license_id": str(license_.pk) if license_ else None, "restored": restored}


# Refunds and disputes of a version upgrade's payment: a full refund or a lost dispute takes the
# license back to the line it covered before, unless a later upgrade has raised it further (that
# one was paid for too; the refunded upgrade is then only marked refunded). An open or won dispute
# of an upgrade is recorded only: the license's own payment still pays for the license.

UPGRADE_REFUNDED_REASON = "The payment of its version upgrade was refunded in full"


def _upgrade_paid_by(payment) -> VersionUpgrade | None:
    try:
        return VersionUpgrade.objects.filter(pk=payment.object_id).first() if payment.object_id else None
    except ValidationError:  # not an upgrade id: nothing of ours
        return None


def license_upgrade_payment_refunded(*, payment) -> dict:
    upgrade = _upgrade_paid_by(payment)
    if upgrade is None:
        return {"upgrade_id": None, "reverted": False}
    # The license row is the lock, as for every change to what a license covers.
    license_ = PerpetualLicense.objects.select_for_update().get(pk=upgrade.license_id)
    upgrade = VersionUpgrade.objects.get(pk=upgrade.pk)
    if upgrade.status != UpgradeStatus.COMPLETED:
        return {"upgrade_id": str(upgrade.pk), "license_id": str(license_.pk), "reverted": False}
    previous = snapshot(license_)
    reverted = license_.eligible_until_version == versions.eligible_until_for(upgrade.to_version)
    if reverted:
        license_.eligible_until_version = versions.eligible_until_for(upgrade.from_version)
        license_.save(update_fields=["eligible_until_version", "updated_at"])
    upgrade.status = UpgradeStatus.REFUNDED
    upgrade.save(update_fields=["status", "updated_at"])
    audit_record(
        action=AuditAction.UPDATE,
        resource_type=resource_type_of(license_),
        resource_id=str(license_.pk),
        previous_value=previous,
        new_value={**snapshot(license_), "upgrade_id": str(upgrade.pk), "reason": UPGRADE_REFUNDED_REASON},
    )
    return {
        "upgrade_id": str(upgrade.pk),
        "license_id": str(license_.pk),
        "reverted": reverted,
        "eligible_until_version": license_.eligible_until_version,
    }


def license_upgrade_payment_disputed(*, payment) -> dict:
    return {"upgrade_id": payment.object_id or None, "suspended": False}


def license_upgrade_dispute_won(*, payment) -> dict:
    return {"upgrade_id": payment.object_id or None, "restored": False}
