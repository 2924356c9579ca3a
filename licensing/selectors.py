"""Reads of licensing: BYOK for the credits engine, a customer's licenses, version eligibility."""

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

from billing_project.errors import NotFound, RuleViolation
from billing_project.sql import one_of
from licensing import keys, pricing, versions
from licensing.codes import ErrorCode, InvalidReason
from licensing.models import LicenseActivation, LicenseStatus, PerpetualLicense


@dataclass(frozen=True)
class LicenseUse:
    """How a user's active licenses bear on their usage: one has BYOK on (usage is free), one has
    BYOK off (usage is priced at the perpetual tier)."""

    byok: bool = False
    licensed_without_byok: bool = False


def license_use_statement(*, user_ids: list) -> tuple[str, list]:
    """The `LicenseUse` of each of these users who holds an active license (see `license_uses_of`).
    Read for every usage record, with the credits engine's other reads under the balance lock (one
    round trip); on the (user, status) index, nothing cached, so no invalidation to forget."""
    byok = "CASE WHEN byok_enabled THEN 1 ELSE 0 END"
    among, params = one_of(user_ids)
    return (
        f"SELECT user_id, MAX({byok}), MIN({byok}) "
        f"FROM {PerpetualLicense._meta.db_table} "
        f"WHERE user_id {among} AND status = %s GROUP BY user_id",
        [*params, LicenseStatus.ACTIVE],
    )


def license_uses_of(rows: list[tuple]) -> dict[int, LicenseUse]:
    """The rows of `license_use_statement` by user id; a user without a row has no active license."""
    return {
        user_id: LicenseUse(byok=bool(any_byok), licensed_without_byok=not all_byok)
        for user_id, any_byok, all_byok in rows
    }


def byok_active_for(*, user_id) -> bool:
    """True when the user holds an active license with BYOK on."""
    with connection.cursor() as cursor:
        cursor.execute(*license_use_statement(user_ids=[user_id]))
        return license_uses_of(cursor.fetchall()).get(user_id, LicenseUse()).byok


def license_key_checked(raw: str) -> str:
    """The normalized key, or a 422 `bad_checksum` problem: a typo is refused before any lookup."""
    key = keys.key_normalize(raw)
    if not keys.key_is_valid(key):
        raise RuleViolation("This is not a valid license key: check it for typos.", code=ErrorCode.BAD_CHECKSUM)
    return key


def version_checked(raw: str, *, field: str) -> versions.Version:
    """A parsed app version, or a 400 validation problem naming `field`."""
    try:
        return versions.version_parse(raw)
    except versions.InvalidVersion as error:
        raise ValidationError({field: [f"'{raw}' is not a valid version (PEP 440, e.g. 1.4.2)."]}) from error


def license_not_found() -> NotFound:
    return NotFound("No license with this key.", code=ErrorCode.LICENSE_NOT_FOUND)


def license_get_for_owner(*, user, license_key: str) -> PerpetualLicense:
    """The caller's license by key. Someone else's key is not found either, so keys cannot be probed."""
    license_ = PerpetualLicense.objects.filter(license_key=license_key_checked(license_key), user=user).first()
    if license_ is None:
        raise license_not_found()
    return license_


def active_activations() -> Prefetch:
    return Prefetch(
        "activations",
        queryset=LicenseActivation.objects.filter(deactivated_at__isnull=True).order_by("activated_at"),
        to_attr="active_activations",
    )


def license_list_for_owner(*, user) -> QuerySet[PerpetualLicense]:
    """A customer's licenses, newest first, each with its active devices in `active_activations`."""
    return PerpetualLicense.objects.filter(user=user).prefetch_related(active_activations()).order_by("-created_at")


def license_list_for_staff() -> QuerySet[PerpetualLicense]:
    return (
        PerpetualLicense.objects.select_related("user")
        .annotate(activations_used=Count("activations", filter=Q(activations__deactivated_at__isnull=True)))
        .order_by("-created_at")
    )


@dataclass(frozen=True)
class UpgradeOffer:
    """The next major line a license can be upgraded to, and its price now."""

    to_version: str
    eligible_until_version: str
    quote: pricing.UpgradeQuote


def license_upgrade_offer(*, license_: PerpetualLicense, now=None) -> UpgradeOffer | None:
    """An upgrade is on offer to an active license that does not cover the release on sale
    (LICENSE_CURRENT_VERSION): a customer never pays for a major version that does not exist yet."""
    if license_.status != LicenseStatus.ACTIVE:
        return None
    if versions.version_covered(
        eligible_until_version=license_.eligible_until_version, version=settings.LICENSE_CURRENT_VERSION
    ):
        return None
    to_version, eligible_until = versions.version_upgrade_target(license_.eligible_until_version)
    quote = pricing.upgrade_quote(
        purchased_at=license_.activated_at or license_.created_at,
        now=now or timezone.now(),
        list_price_usd=settings.LICENSE_UPGRADE_PRICE_USD,
        discount_percent=settings.LICENSE_EARLY_UPGRADE_DISCOUNT_PERCENT,
        early_days=settings.LICENSE_EARLY_UPGRADE_DAYS,
    )
    return UpgradeOffer(to_version=to_version, eligible_until_version=eligible_until, quote=quote)


@dataclass(frozen=True)
class Eligibility:
    eligible: bool
    reason: str | None
    version: str
    purchased_version: str
    eligible_until_version: str
    status: str
    upgrade_available: bool
    upgrade_to_version: str | None
    upgrade_price_usd: Decimal | None
    upgrade_discount_usd: Decimal | None


def license_eligibility(*, user, license_key: str, version: str) -> Eligibility:
    """Whether the caller's license may run `version`: it must be active and the version at most
    its eligible_until_version (PEP 440 order: 2.0.0rc1 is past every 1.x)."""
    license_ = license_get_for_owner(user=user, license_key=license_key)
    parsed = version_checked(version, field="version")
    if license_.status != LicenseStatus.ACTIVE:
        reason = license_.status
    elif parsed > versions.version_parse(license_.eligible_until_version):
        reason = InvalidReason.VERSION_NOT_COVERED
    else:
        reason = None
    offer = license_upgrade_offer(license_=license_) if reason == InvalidReason.VERSION_NOT_COVERED else None
    return Eligibility(
        eligible=reason is None,
        reason=reason,
        version=str(parsed),
        purchased_version=license_.purchased_version,
        eligible_until_version=license_.eligible_until_version,
        status=license_.status,
        upgrade_available=offer is not None,
        upgrade_to_version=offer.to_version if offer else None,
        upgrade_price_usd=offer.quote.price_usd if offer else None,
        upgrade_discount_usd=offer.quote.discount_usd if offer else None,
    )
