"""Staff management of coupons and campaigns, bulk generation of single-use codes, and the development
demo. Every staff change writes its audit row in its transaction; a coupon is locked before its
campaign, the order redemption locks them in."""

import secrets
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models.functions import Upper
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_model_change, audit_record, resource_type_of, snapshot
from billing_project.errors import Conflict, NotFound, RuleViolation
from billing_project.transactions import conflict_retrying
from coupons.codes import ErrorCode
from coupons.models import CampaignCoupon, Coupon, CouponCampaign, CouponUsageLimit
from coupons.selectors.validation import code_normalize, coupons_by_code

# Coupons (staff)

COUPON_FIELDS = frozenset(
    {
        "code",
        "description",
        "coupon_type",
        "discount_type",
        "discount_value",
        "applicable_tiers",
        "applicable_billing_cycles",
        "min_purchase_usd",
        "new_customers_only",
        "valid_from",
        "valid_until",
        "max_uses",
        "max_uses_per_user",
        "is_active",
    }
)


def _coupon_save(coupon: Coupon) -> None:
    """Validates the coupon's fields and shape (model rules), then saves; a taken code is a 409."""
    try:
        coupon.full_clean(exclude=["created_by", "deleted_by"], validate_constraints=False)
    except ValidationError as invalid:
        raise RuleViolation(
            "The coupon is not valid.", code=ErrorCode.INVALID_COUPON, extra={"errors": invalid.message_dict}
        ) from None
    duplicates = coupons_by_code(coupon.code).exclude(pk=coupon.pk)
    if duplicates.exists():
        raise Conflict(f"The code {code_normalize(coupon.code)} is taken.", code=ErrorCode.CODE_TAKEN)
    try:
        # The check constraints (percentage at most 100, dates in order): a 422, not an IntegrityError.
        coupon.validate_constraints(exclude=["created_by", "deleted_by"])
    except ValidationError as invalid:
        raise RuleViolation(
            "The coupon is not valid.", code=ErrorCode.INVALID_COUPON, extra={"errors": invalid.message_dict}
        ) from None
    try:
        with transaction.atomic():
            coupon.save()
    except IntegrityError:
        if coupons_by_code(coupon.code).exclude(pk=coupon.pk).exists():
            raise Conflict("The code is taken.", code=ErrorCode.CODE_TAKEN) from None
        raise


def _coupon_locked(coupon_id) -> Coupon:
    try:
        coupon = Coupon.objects.select_for_update().filter(pk=coupon_id).first()
    except ValidationError:
        coupon = None
    if coupon is None:
        raise NotFound("No coupon with this id.", code=ErrorCode.COUPON_NOT_FOUND)
    return coupon


@conflict_retrying
@transaction.atomic
def coupon_create(*, actor, campaign_id=None, **fields) -> Coupon:
    unknown = set(fields) - COUPON_FIELDS
    if unknown:
        raise TypeError(f"unknown coupon fields: {sorted(unknown)}")
    coupon = Coupon(created_by=actor, **{"valid_from": timezone.now(), **fields})
    _coupon_save(coupon)
    CouponUsageLimit.objects.create(coupon=coupon)
    audit_model_change(action=AuditAction.CREATE, instance=coupon, actor=actor)
    if campaign_id is not None:
        campaign_coupon_attach(campaign_id=campaign_id, coupon_id=coupon.pk, actor=actor)
    return coupon


@transaction.atomic
def coupon_update(*, coupon_id, actor, **changes) -> Coupon:
    unknown = set(changes) - COUPON_FIELDS
    if unknown:
        raise TypeError(f"unknown coupon fields: {sorted(unknown)}")
    coupon = _coupon_locked(coupon_id)
    if coupon.deleted_at is not None:
        raise Conflict("A deleted coupon cannot be changed.", code=ErrorCode.COUPON_DELETED)
    previous = snapshot(coupon)
    for name, value in changes.items():
        setattr(coupon, name, value)
    _coupon_save(coupon)
    audit_model_change(action=AuditAction.UPDATE, instance=coupon, previous_value=previous, actor=actor)
    return coupon


def _coupon_switch(*, coupon_id, actor, is_active: bool) -> Coupon:
    coupon = _coupon_locked(coupon_id)
    if coupon.deleted_at is not None:
        raise Conflict("A deleted coupon cannot be changed.", code=ErrorCode.COUPON_DELETED)
    previous = snapshot(coupon)
    coupon.is_active = is_active
    coupon.save(update_fields=["is_active", "updated_at"])
    action = AuditAction.ACTIVATE if is_active else AuditAction.DEACTIVATE
    audit_model_change(action=action, instance=coupon, previous_value=previous, actor=actor)
    return coupon


@transaction.atomic
def coupon_activate(*, coupon_id, actor) -> Coupon:
    return _coupon_switch(coupon_id=coupon_id, actor=actor, is_active=True)


@transaction.atomic
def coupon_deactivate(*, coupon_id, actor) -> Coupon:
    return _coupon_switch(coupon_id=coupon_id, actor=actor, is_active=False)


@transaction.atomic
def coupon_delete(*, coupon_id, actor) -> Coupon:
    """A soft delete: the coupon stops validating, its redemptions and analytics stay. Idempotent."""
    coupon = _coupon_locked(coupon_id)
    if coupon.deleted_at is not None:
        return coupon
    previous = snapshot(coupon)
    coupon.deleted_at = timezone.now()
    coupon.deleted_by = actor
    coupon.is_active = False
    coupon.save(update_fields=["deleted_at", "deleted_by", "is_active", "updated_at"])
    audit_model_change(action=AuditAction.DELETE, instance=coupon, previous_value=previous, actor=actor)
    return coupon


# Campaigns (staff)

CAMPAIGN_FIELDS = frozenset({"name", "description", "starts_at", "ends_at", "budget_usd", "is_active"})


def _campaign_save(campaign: CouponCampaign) -> None:
    try:
        campaign.full_clean(exclude=["created_by"])
    except ValidationError as invalid:
        raise RuleViolation(
            "The campaign is not valid.", code=ErrorCode.INVALID_CAMPAIGN, extra={"errors": invalid.message_dict}
        ) from None
    campaign.save()


def _campaign_locked(campaign_id) -> CouponCampaign:
    try:
        campaign = CouponCampaign.objects.select_for_update().filter(pk=campaign_id).first()
    except ValidationError:
        campaign = None
    if campaign is None:
        raise NotFound("No campaign with this id.", code=ErrorCode.CAMPAIGN_NOT_FOUND)
    return campaign


@transaction.atomic
def campaign_create(*, actor, **fields) -> CouponCampaign:
    campaign = CouponCampaign(created_by=actor, **fields)
    _campaign_save(campaign)
    audit_model_change(action=AuditAction.CREATE, instance=campaign, actor=actor)
    return campaign


@transaction.atomic
def campaign_update(*, campaign_id, actor, **changes) -> CouponCampaign:
    unknown = set(changes) - CAMPAIGN_FIELDS
    if unknown:
        raise TypeError(f"unknown campaign fields: {sorted(unknown)}")
    campaign = _campaign_locked(campaign_id)
    previous = snapshot(campaign)
    for name, value in changes.items():
        setattr(campaign, name, value)
    _campaign_save(campaign)
    audit_model_change(action=AuditAction.UPDATE, instance=campaign, previous_value=previous, actor=actor)
    return campaign


@transaction.atomic
def campaign_delete(*, campaign_id, actor) -> None:
    """Only a campaign nothing was redeemed under may go (its coupons stay, detached); one with
    history is deactivated instead."""
    campaign = _campaign_locked(campaign_id)
    if campaign.redemptions.exists():
        raise Conflict(
            "Coupons of this campaign were redeemed: deactivate it instead.", code=ErrorCode.CAMPAIGN_HAS_REDEMPTIONS
        )
    previous = snapshot(campaign)
    campaign_pk = campaign.pk
    campaign.delete()
    audit_record(
        action=AuditAction.DELETE,
        resource_type=resource_type_of(CouponCampaign),
        resource_id=str(campaign_pk),
        previous_value=previous,
        actor=actor,
    )


@transaction.atomic
def campaign_coupon_attach(*, campaign_id, coupon_id, actor) -> CampaignCoupon:
    coupon = _coupon_locked(coupon_id)  # coupon before campaign, the order redemption locks them in
    campaign = _campaign_locked(campaign_id)
    if coupon.deleted_at is not None:
        raise Conflict("A deleted coupon cannot join a campaign.", code=ErrorCode.COUPON_DELETED)
    link = CampaignCoupon.objects.filter(coupon=coupon).first()
    if link is not None:
        if link.campaign_id == campaign.pk:
            return link
        raise Conflict(
            "This coupon belongs to another campaign; detach it first.",
            code=ErrorCode.COUPON_IN_ANOTHER_CAMPAIGN,
            extra={"campaign_id": str(link.campaign_id)},
        )
    link = CampaignCoupon.objects.create(campaign=campaign, coupon=coupon)
    audit_model_change(action=AuditAction.CREATE, instance=link, actor=actor)
    return link


@transaction.atomic
def campaign_coupon_detach(*, campaign_id, coupon_id, actor) -> None:
    campaign = _campaign_locked(campaign_id)
    link = CampaignCoupon.objects.filter(campaign=campaign, coupon_id=coupon_id).first()
    if link is None:
        raise NotFound("This coupon is not in this campaign.", code=ErrorCode.COUPON_NOT_IN_CAMPAIGN)
    previous = snapshot(link)
    link_pk = link.pk
    link.delete()
    audit_record(
        action=AuditAction.DELETE,
        resource_type=resource_type_of(CampaignCoupon),
        resource_id=str(link_pk),
        previous_value=previous,
        actor=actor,
    )


CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: codes are read and typed by people
CODE_RANDOM_LENGTH = 10


def _random_codes(prefix: str, count: int) -> set[str]:
    codes = set()
    while len(codes) < count:
        codes.add(prefix + "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_RANDOM_LENGTH)))
    return codes


def _codes_taken(codes: set[str]) -> set[str]:
    existing = Coupon.objects.alias(code_upper=Upper("code")).filter(code_upper__in=codes)
    return set(existing.values_list("code", flat=True))


@conflict_retrying
@transaction.atomic
def campaign_coupons_generate(*, campaign_id, actor, count: int, prefix: str = "", **template) -> list[Coupon]:
    """`count` unique single-use codes for the campaign, each a coupon made from `template` (its
    type, value, dates, ...) with max_uses 1. Collisions with existing codes (about 32**-10 each)
    are drawn again. One audit row lists the codes."""
    if not 1 <= count <= settings.COUPON_BULK_MAX:
        raise RuleViolation(f"Generate 1 to {settings.COUPON_BULK_MAX} codes at a time.", code=ErrorCode.TOO_MANY_CODES)
    campaign = _campaign_locked(campaign_id)
    prefix = code_normalize(prefix)
    sample = Coupon(
        created_by=actor,
        code=prefix + "X" * CODE_RANDOM_LENGTH,
        # valid from now unless the template says; single-use whatever the template says
        **{"valid_from": timezone.now(), **template, "max_uses": 1, "max_uses_per_user": 1},
    )
    try:
        # Check constraints too (percentage at most 100, dates in order); the sample's code is no real code.
        sample.full_clean(exclude=["created_by", "deleted_by", "code"])
    except ValidationError as invalid:
        raise RuleViolation(
            "The coupon template is not valid.", code=ErrorCode.INVALID_COUPON, extra={"errors": invalid.message_dict}
        ) from None
    codes = _random_codes(prefix, count)
    taken = _codes_taken(codes)
    while taken:
        codes = (codes - taken) | _random_codes(prefix, len(taken))
        taken = _codes_taken(codes)
    fields = {name: getattr(sample, name) for name in COUPON_FIELDS - {"code"}}
    coupons = Coupon.objects.bulk_create(Coupon(code=code, created_by=actor, **fields) for code in sorted(codes))
    CouponUsageLimit.objects.bulk_create(CouponUsageLimit(coupon=coupon) for coupon in coupons)
    CampaignCoupon.objects.bulk_create(CampaignCoupon(campaign=campaign, coupon=coupon) for coupon in coupons)
    audit_record(
        action=AuditAction.CREATE,
        resource_type=resource_type_of(Coupon),
        resource_id=f"campaign:{campaign.pk}",
        new_value={"campaign_id": campaign.pk, "count": count, "template": fields, "codes": sorted(codes)},
        actor=actor,
        status_code=201,
    )
    return coupons


DEMO_COUPONS = (
    {"code": "WELCOME20", "coupon_type": "percentage_discount", "discount_type": "percentage", "discount_value": 20},
    {"code": "BONUS5K", "coupon_type": "fixed_amount_discount", "discount_type": "credits", "discount_value": 5000},
    {"code": "EXTRAMONTH", "coupon_type": "duration_bonus", "discount_type": "months_free", "discount_value": 1},
    {"code": "BYOK-MIGRATE", "coupon_type": "byok_migration", "discount_type": "", "discount_value": 0},
)


# The demo launch began before the weeks of history `seed_demo_activity` creates, which redeem its coupons.
DEMO_LAUNCHED_DAYS_AGO = 90


@transaction.atomic
def demo_coupons_seed() -> int:
    """The development demo: a launch campaign with one coupon of each kind. Idempotent."""
    now = timezone.now()
    launched = now - timedelta(days=DEMO_LAUNCHED_DAYS_AGO)
    campaign, _ = CouponCampaign.objects.get_or_create(
        name="Demo launch",
        defaults={"starts_at": launched, "ends_at": now + timedelta(days=365), "budget_usd": Decimal("1000.00")},
    )
    created = 0
    for fields in DEMO_COUPONS:
        if coupons_by_code(fields["code"]).exists():
            continue
        coupon = Coupon.objects.create(valid_from=launched, description="Demo coupon", **fields)
        CouponUsageLimit.objects.create(coupon=coupon)
        CampaignCoupon.objects.create(campaign=campaign, coupon=coupon)
        created += 1
    return created
