"""The coupons pages of the admin console: coupons change only through audited actions once they exist,
campaigns generate codes, fraud detections are resolved by an action, and redemptions are read-only."""

from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AdminAuditLog, AuditAction
from coupons.models import (
    CampaignCoupon,
    Coupon,
    CouponCampaign,
    CouponRedemption,
    CouponType,
    DiscountType,
)
from coupons.tests.factories import (
    CampaignCouponFactory,
    CouponCampaignFactory,
    CouponFactory,
    CouponFraudDetectionFactory,
    CouponRedemptionFactory,
)

pytestmark = pytest.mark.django_db

COUPON_CHANGELIST = reverse("admin:coupons_coupon_changelist")
COUPON_ADD = reverse("admin:coupons_coupon_add")
CAMPAIGN_CHANGELIST = reverse("admin:coupons_couponcampaign_changelist")
DETECTION_CHANGELIST = reverse("admin:coupons_couponfrauddetection_changelist")
REDEMPTION_CHANGELIST = reverse("admin:coupons_couponredemption_changelist")


def coupon_change_url(coupon) -> str:
    return reverse("admin:coupons_coupon_change", args=[coupon.pk])


def run_action(client, changelist: str, action: str, rows, **fields):
    """Posts a console action for the selected rows (with `apply` and the form's fields, if any)."""
    return client.post(
        changelist,
        {"action": action, "_selected_action": [str(row.pk) for row in rows], **fields},
        follow=True,
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def coupon_form(**overrides) -> dict:
    """What the add form posts for a valid 15% coupon."""
    return {
        "code": "console15",
        "description": "Added in the console",
        "coupon_type": CouponType.PERCENTAGE_DISCOUNT,
        "discount_type": DiscountType.PERCENTAGE,
        "discount_value": "15.00",
        "min_purchase_usd": "",
        "valid_from_0": "2024-01-01",
        "valid_from_1": "00:00:00",
        "valid_until_0": "",
        "valid_until_1": "",
        "max_uses": "",
        "max_uses_per_user": "1",
        "is_active": "on",
        **overrides,
    }


# Pages


def test_coupon_changelist_change_and_add_pages_open(admin_client):
    coupon = CouponFactory()
    CouponFactory(deleted_at=timezone.now(), is_active=False)

    assert admin_client.get(COUPON_CHANGELIST).status_code == 200
    assert admin_client.get(COUPON_CHANGELIST, {"q": coupon.code}).status_code == 200
    assert admin_client.get(COUPON_CHANGELIST, {"deleted_at__isempty": "0"}).status_code == 200
    assert admin_client.get(coupon_change_url(coupon)).status_code == 200
    assert admin_client.get(COUPON_ADD).status_code == 200


def test_is_active_is_read_only_on_the_change_form_but_set_on_the_add_form(admin_client):
    coupon = CouponFactory()

    change_form = admin_client.get(coupon_change_url(coupon)).context["adminform"].form
    add_form = admin_client.get(COUPON_ADD).context["adminform"].form

    assert "is_active" not in change_form.fields
    assert {"deleted_at", "deleted_by", "created_by"}.isdisjoint(change_form.fields)
    assert "code" in change_form.fields
    assert "is_active" in add_form.fields


def test_saving_the_change_form_cannot_deactivate_a_coupon_and_is_audited(admin_client, admin_user):
    coupon = CouponFactory(code="KEEPME", description="before")
    form = coupon_form(code="KEEPME", description="after", discount_value="20.00")
    del form["is_active"]  # an unticked box would read as False, were the field editable

    response = admin_client.post(coupon_change_url(coupon), form)

    assert response.status_code == 302
    coupon.refresh_from_db()
    assert (coupon.description, coupon.is_active) == ("after", True)
    row = AdminAuditLog.objects.get()
    assert (row.action, row.resource_type, row.resource_id, row.actor) == (
        AuditAction.UPDATE,
        "coupons.coupon",
        str(coupon.pk),
        admin_user,
    )
    assert (row.previous_value["description"], row.new_value["description"]) == ("before", "after")


def test_coupons_cannot_be_hard_deleted_from_the_console(admin_client):
    coupon = CouponFactory()

    response = admin_client.post(reverse("admin:coupons_coupon_delete", args=[coupon.pk]), {"post": "yes"})

    assert response.status_code == 403
    assert Coupon.objects.filter(pk=coupon.pk, deleted_at__isnull=True).exists()


# Adding a coupon


def test_a_tier_specific_coupon_takes_its_tiers_and_cycles_from_checkboxes(admin_client):
    page = admin_client.get(COUPON_ADD)
    response = admin_client.post(
        COUPON_ADD,
        coupon_form(
            coupon_type=CouponType.TIER_SPECIFIC_DISCOUNT,
            applicable_tiers=["pro", "pro_max"],
            applicable_billing_cycles=["annual"],
        ),
    )

    assert 'type="checkbox" name="applicable_tiers" value="enterprise_max"' in page.content.decode()
    assert response.status_code == 302
    coupon = Coupon.objects.get()
    assert (coupon.applicable_tiers, coupon.applicable_billing_cycles) == (["pro", "pro_max"], ["annual"])


def test_adding_a_coupon_in_the_console_stores_it_upper_case_and_audits_it(admin_client, admin_user):
    response = admin_client.post(COUPON_ADD, coupon_form())

    assert response.status_code == 302
    coupon = Coupon.objects.get()
    assert (coupon.code, coupon.discount_value, coupon.is_active, coupon.created_by) == (
        "CONSOLE15",
        Decimal("15.00"),
        True,
        admin_user,
    )
    row = AdminAuditLog.objects.get()
    assert (row.action, row.resource_type, row.resource_id, row.actor) == (
        AuditAction.CREATE,
        "coupons.coupon",
        str(coupon.pk),
        admin_user,
    )
    assert row.new_value["code"] == "CONSOLE15"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"discount_type": DiscountType.CREDITS, "discount_value": "100"}, "discount_type"),
        ({"coupon_type": CouponType.TIER_SPECIFIC_DISCOUNT}, "applicable_tiers"),
        ({"discount_value": "150.00"}, None),
        ({"valid_until_0": "2023-12-31", "valid_until_1": "00:00:00"}, None),
    ],
    ids=["credits-on-a-percentage-coupon", "tier-specific-without-tiers", "percentage-over-100", "dates-reversed"],
)
def test_adding_a_coupon_with_a_bad_shape_shows_the_error_and_writes_nothing(admin_client, overrides, field):
    response = admin_client.post(COUPON_ADD, coupon_form(**overrides))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors
    if field is not None:
        assert field in errors
    assert b"errornote" in response.content
    assert not Coupon.objects.exists()
    assert not AdminAuditLog.objects.exists()


def test_adding_a_coupon_with_a_code_taken_in_another_case_shows_the_error(admin_client):
    CouponFactory(code="CONSOLE15")

    response = admin_client.post(COUPON_ADD, coupon_form(code="Console15"))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert Coupon.objects.count() == 1
    assert not AdminAuditLog.objects.exists()


# Coupon actions


def test_activate_action_activates_the_selected_coupons_and_audits_each(admin_client, admin_user):
    coupons = CouponFactory.create_batch(2, is_active=False)
    untouched = CouponFactory(is_active=False)

    response = run_action(admin_client, COUPON_CHANGELIST, "activate_coupons", coupons)

    assert response.status_code == 200
    assert set(Coupon.objects.filter(is_active=True).values_list("pk", flat=True)) == {c.pk for c in coupons}
    untouched.refresh_from_db()
    assert not untouched.is_active
    rows = AdminAuditLog.objects.all()
    assert {(row.action, row.resource_type, row.actor) for row in rows} == {
        (AuditAction.ACTIVATE, "coupons.coupon", admin_user)
    }
    assert {row.resource_id for row in rows} == {str(c.pk) for c in coupons}
    assert any(message.startswith("Activated: ") for message in messages_of(response))


def test_deactivate_action_deactivates_and_audits(admin_client, admin_user):
    coupon = CouponFactory()

    run_action(admin_client, COUPON_CHANGELIST, "deactivate_coupons", [coupon])

    coupon.refresh_from_db()
    assert not coupon.is_active
    row = AdminAuditLog.objects.get()
    assert (row.action, row.resource_id, row.actor) == (AuditAction.DEACTIVATE, str(coupon.pk), admin_user)
    assert (row.previous_value["is_active"], row.new_value["is_active"]) == (True, False)


def test_soft_delete_action_keeps_the_rows_and_their_redemptions_and_audits(admin_client, admin_user):
    coupon = CouponFactory()
    redemption = CouponRedemptionFactory(coupon=coupon)

    run_action(admin_client, COUPON_CHANGELIST, "soft_delete_coupons", [coupon])

    coupon.refresh_from_db()
    assert coupon.deleted_at is not None
    assert (coupon.deleted_by, coupon.is_active) == (admin_user, False)
    assert CouponRedemption.objects.filter(pk=redemption.pk, coupon=coupon).exists()
    row = AdminAuditLog.objects.get()
    assert (row.action, row.resource_type, row.resource_id, row.actor) == (
        AuditAction.DELETE,
        "coupons.coupon",
        str(coupon.pk),
        admin_user,
    )


def test_activate_action_refuses_a_deleted_coupon_and_does_the_others(admin_client):
    deleted = CouponFactory(code="GONE", is_active=False, deleted_at=timezone.now())
    inactive = CouponFactory(code="BACK", is_active=False)

    response = run_action(admin_client, COUPON_CHANGELIST, "activate_coupons", [deleted, inactive])

    deleted.refresh_from_db()
    inactive.refresh_from_db()
    assert (deleted.is_active, inactive.is_active) == (False, True)
    assert list(AdminAuditLog.objects.values_list("action", "resource_id")) == [
        (AuditAction.ACTIVATE, str(inactive.pk))
    ]
    messages = messages_of(response)
    assert "Activated: BACK" in messages
    assert any(message.startswith("Refused: GONE: ") for message in messages)


# Campaign: generate codes


def test_generate_codes_action_first_asks_for_the_template(admin_client):
    campaign = CouponCampaignFactory()

    response = run_action(admin_client, CAMPAIGN_CHANGELIST, "generate_codes", [campaign])

    assert response.status_code == 200
    assert "admin/action_form.html" in [template.name for template in response.templates]
    assert set(response.context["form"].fields) >= {"count", "prefix", "coupon_type", "discount_type"}
    assert not Coupon.objects.exists()
    assert not AdminAuditLog.objects.exists()


def test_generate_codes_action_creates_single_use_codes_in_the_campaign(admin_client, admin_user):
    campaign = CouponCampaignFactory(name="Launch")

    response = run_action(
        admin_client,
        CAMPAIGN_CHANGELIST,
        "generate_codes",
        [campaign],
        apply="1",
        count="5",
        prefix="launch-",
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.FIXED_AMOUNT,
        discount_value="10.00",
        valid_until="",
    )

    assert response.status_code == 200
    coupons = Coupon.objects.filter(campaign_links__campaign=campaign)
    codes = sorted(coupons.values_list("code", flat=True))
    assert len(set(codes)) == 5
    assert all(code.startswith("LAUNCH-") for code in codes)
    assert set(coupons.values_list("max_uses", "discount_type", "discount_value", "created_by")) == {
        (1, DiscountType.FIXED_AMOUNT, Decimal("10.00"), admin_user.pk)
    }
    assert Coupon.objects.count() == 5
    row = AdminAuditLog.objects.get()
    assert (row.action, row.resource_type, row.resource_id, row.actor) == (
        AuditAction.CREATE,
        "coupons.coupon",
        f"campaign:{campaign.pk}",
        admin_user,
    )
    assert sorted(row.new_value["codes"]) == codes
    assert "5 codes generated for Launch" in messages_of(response)


def test_generate_codes_action_with_a_bad_template_is_refused_and_writes_nothing(admin_client):
    campaign = CouponCampaignFactory()

    response = run_action(
        admin_client,
        CAMPAIGN_CHANGELIST,
        "generate_codes",
        [campaign],
        apply="1",
        count="3",
        prefix="",
        coupon_type=CouponType.PERCENTAGE_DISCOUNT,
        discount_type=DiscountType.MONTHS_FREE,
        discount_value="1",
        valid_until="",
    )

    assert not Coupon.objects.exists()
    assert not CampaignCoupon.objects.exists()
    assert not AdminAuditLog.objects.exists()
    assert any(message.startswith(f"Refused: {campaign.name}: ") for message in messages_of(response))


def test_campaigns_cannot_be_deleted_from_the_console(admin_client):
    campaign = CouponCampaignFactory()

    response = admin_client.post(reverse("admin:coupons_couponcampaign_delete", args=[campaign.pk]), {"post": "yes"})

    assert response.status_code == 403
    assert CouponCampaign.objects.filter(pk=campaign.pk).exists()


# Fraud detections


def test_resolve_action_resolves_with_the_given_resolution_and_audits(admin_client, admin_user):
    detections = CouponFraudDetectionFactory.create_batch(2)

    response = run_action(
        admin_client,
        DETECTION_CHANGELIST,
        "resolve_detections",
        detections,
        apply="1",
        resolution="Reviewed: same household",
    )

    assert response.status_code == 200
    for detection in detections:
        detection.refresh_from_db()
        assert (detection.is_flagged, detection.resolved_by, detection.resolution) == (
            False,
            admin_user,
            "Reviewed: same household",
        )
        assert detection.resolved_at is not None
    rows = AdminAuditLog.objects.all()
    assert {(row.action, row.resource_type, row.actor) for row in rows} == {
        (AuditAction.RESOLVE, "coupons.couponfrauddetection", admin_user)
    }
    assert {row.resource_id for row in rows} == {str(detection.pk) for detection in detections}


def test_resolve_action_without_a_resolution_shows_the_form_again(admin_client):
    detection = CouponFraudDetectionFactory()

    response = run_action(
        admin_client, DETECTION_CHANGELIST, "resolve_detections", [detection], apply="1", resolution=""
    )

    assert b"errorlist" in response.content
    detection.refresh_from_db()
    assert (detection.is_flagged, detection.resolved_at) == (True, None)
    assert not AdminAuditLog.objects.exists()


def test_resolve_action_refuses_an_already_resolved_detection(admin_client, admin_user):
    resolved = CouponFraudDetectionFactory(
        is_flagged=False, resolved_at=timezone.now(), resolved_by=admin_user, resolution="first look"
    )

    response = run_action(
        admin_client, DETECTION_CHANGELIST, "resolve_detections", [resolved], apply="1", resolution="second look"
    )

    resolved.refresh_from_db()
    assert resolved.resolution == "first look"
    assert not AdminAuditLog.objects.exists()
    assert any(message.startswith("Refused: ") for message in messages_of(response))


def test_the_fraud_detection_change_page_is_read_only(admin_client):
    detection = CouponFraudDetectionFactory()
    url = reverse("admin:coupons_couponfrauddetection_change", args=[detection.pk])

    page = admin_client.get(url)
    posted = admin_client.post(url, {"is_flagged": "", "resolution": "edited by hand"})

    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert not page.context["adminform"].form.fields
    assert posted.status_code == 403
    detection.refresh_from_db()
    assert (detection.is_flagged, detection.resolution) == (True, "")
    assert admin_client.get(reverse("admin:coupons_couponfrauddetection_add")).status_code == 403
    assert admin_client.get(DETECTION_CHANGELIST).status_code == 200
    assert not AdminAuditLog.objects.exists()


# Redemptions


def test_coupon_redemptions_are_read_only(admin_client):
    redemption = CouponRedemptionFactory()
    change_url = reverse("admin:coupons_couponredemption_change", args=[redemption.pk])

    assert admin_client.get(REDEMPTION_CHANGELIST).status_code == 200
    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert not page.context["adminform"].form.fields
    assert admin_client.get(reverse("admin:coupons_couponredemption_add")).status_code == 403
    assert admin_client.post(change_url, {"status": "reversed"}).status_code == 403
    delete = admin_client.post(reverse("admin:coupons_couponredemption_delete", args=[redemption.pk]), {"post": "yes"})
    assert delete.status_code == 403
    redemption.refresh_from_db()
    assert redemption.status == "success"
    changelist = admin_client.get(REDEMPTION_CHANGELIST)
    assert changelist.context["action_form"] is None  # no actions at all, so no bulk delete


def test_coupon_redemptions_survive_a_console_soft_delete_of_their_coupon(admin_client):
    link = CampaignCouponFactory()
    redemption = CouponRedemptionFactory(coupon=link.coupon, campaign=link.campaign)

    run_action(admin_client, COUPON_CHANGELIST, "soft_delete_coupons", [link.coupon])

    redemption.refresh_from_db()
    assert (redemption.coupon_id, redemption.campaign_id) == (link.coupon_id, link.campaign_id)
    assert CampaignCoupon.objects.filter(pk=link.pk).exists()
