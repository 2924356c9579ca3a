"""Staff endpoints of the coupons app: coupons, campaigns, fraud detections and the performance report.
Every successful write leaves exactly one audit row; a refused one writes nothing but the failure row."""

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from audit.models import AdminAuditLog, AuditAction
from coupons.models import (
    CampaignCoupon,
    Coupon,
    CouponCampaign,
    CouponRedemption,
    CouponType,
    CouponUsageLimit,
    DiscountType,
    FraudSeverity,
    RedemptionStatus,
)
from coupons.services.analytics import coupon_analytics_snapshot
from coupons.tests.factories import (
    CampaignCouponFactory,
    CouponCampaignFactory,
    CouponFactory,
    CouponFraudDetectionFactory,
    CouponRedemptionFactory,
)
from subscriptions.models import PaymentStatus
from subscriptions.tests.factories import PaymentTransactionFactory

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
COUPONS = "/api/v1/admin/coupons/"
CAMPAIGNS = "/api/v1/admin/campaigns/"
DETECTIONS = "/api/v1/admin/fraud-detection/"
PERFORMANCE = "/api/v1/admin/analytics/coupon-performance/"


def successful_audit_rows():
    return AdminAuditLog.objects.filter(status_code__lt=400)


def only_audit_row() -> AdminAuditLog:
    return AdminAuditLog.objects.get()


def assert_refused_and_nothing_written(response, *, status: int, code: str):
    assert response.status_code == status
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == code
    assert not successful_audit_rows().exists()
    failure = AdminAuditLog.objects.get()  # the middleware's record of the failed write
    assert failure.status_code == status


def coupon_body(**overrides) -> dict:
    return {
        "code": "spring25",
        "description": "Spring sale",
        "coupon_type": "percentage_discount",
        "discount_type": "percentage",
        "discount_value": "25.00",
        **overrides,
    }


def at(day: date, hour: int = 12):
    return timezone.make_aware(datetime.combine(day, datetime.min.time()) + timedelta(hours=hour))


# Access


def test_staff_coupon_routes_answer_401_without_credentials(api_client):
    coupon = CouponFactory()

    assert api_client.get(COUPONS).status_code == 401
    assert api_client.post(COUPONS, coupon_body(), format="json").status_code == 401
    assert api_client.post(f"{COUPONS}{coupon.pk}/deactivate/").status_code == 401
    assert api_client.get(PERFORMANCE, {"date_from": "2024-01-01", "date_to": "2024-01-02"}).status_code == 401
    coupon.refresh_from_db()
    assert coupon.is_active


def test_staff_coupon_routes_answer_403_to_a_plain_user(user_client):
    coupon = CouponFactory()
    detection = CouponFraudDetectionFactory()

    assert user_client.get(COUPONS).status_code == 403
    assert user_client.get(CAMPAIGNS).status_code == 403
    assert user_client.get(DETECTIONS).status_code == 403
    assert user_client.post(COUPONS, coupon_body(), format="json").status_code == 403
    assert user_client.delete(f"{COUPONS}{coupon.pk}/").status_code == 403
    resolve = user_client.post(f"{DETECTIONS}{detection.pk}/resolve/", {"resolution": "fine"}, format="json")
    assert resolve.status_code == 403
    assert user_client.get(PERFORMANCE, {"date_from": "2024-01-01", "date_to": "2024-01-02"}).status_code == 403
    coupon.refresh_from_db()
    detection.refresh_from_db()
    assert (coupon.deleted_at, coupon.is_active, detection.resolved_at) == (None, True, None)
    assert Coupon.objects.count() == 2  # the factory's coupon and the detection's


# Coupons


def test_coupon_list_filters_by_type_activity_deletion_campaign_and_code(staff_client):
    percentage = CouponFactory(code="PCT-ALPHA")
    credits = CouponFactory(
        code="CREDITS-BETA",
        coupon_type=CouponType.FIXED_AMOUNT_DISCOUNT,
        discount_type=DiscountType.CREDITS,
        discount_value=Decimal("500"),
    )
    inactive = CouponFactory(code="PCT-GAMMA", is_active=False)
    deleted = CouponFactory(code="PCT-DELTA", is_active=False, deleted_at=timezone.now())
    link = CampaignCouponFactory(coupon=credits)

    def codes(**params):
        response = staff_client.get(COUPONS, params)
        assert response.status_code == 200
        return sorted(row["code"] for row in response.json()["results"])

    assert codes() == sorted(c.code for c in (percentage, credits, inactive, deleted))
    assert codes(coupon_type="fixed_amount_discount") == ["CREDITS-BETA"]
    assert codes(is_active="false") == ["PCT-DELTA", "PCT-GAMMA"]
    assert codes(is_active="true") == ["CREDITS-BETA", "PCT-ALPHA"]
    assert codes(deleted="true") == ["PCT-DELTA"]
    assert codes(deleted="false") == ["CREDITS-BETA", "PCT-ALPHA", "PCT-GAMMA"]
    assert codes(campaign=str(link.campaign_id)) == ["CREDITS-BETA"]
    assert codes(code="alpha") == ["PCT-ALPHA"]
    row = staff_client.get(COUPONS, {"code": "beta"}).json()["results"][0]
    assert (row["id"], row["campaign_id"], row["discount_value"]) == (str(credits.pk), str(link.campaign_id), "500.00")


def test_coupon_list_is_paginated(staff_client):
    CouponFactory.create_batch(3)

    body = staff_client.get(COUPONS, {"page_size": 2}).json()

    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["next"]


def test_coupon_create_answers_201_stores_the_code_upper_case_and_is_audited(staff_client, staff_user):
    response = staff_client.post(COUPONS, coupon_body(code="  spring25 "), format="json")

    assert response.status_code == 201
    coupon = Coupon.objects.get()
    assert coupon.code == "SPRING25"
    assert (coupon.coupon_type, coupon.discount_type, coupon.discount_value) == (
        CouponType.PERCENTAGE_DISCOUNT,
        DiscountType.PERCENTAGE,
        Decimal("25.00"),
    )
    assert (coupon.created_by, coupon.is_active, coupon.deleted_at) == (staff_user, True, None)
    assert CouponUsageLimit.objects.filter(coupon=coupon, total_uses=0).exists()
    body = response.json()
    assert (body["id"], body["code"], body["discount_value"], body["total_uses"], body["campaign_id"]) == (
        str(coupon.pk),
        "SPRING25",
        "25.00",
        0,
        None,
    )
    row = only_audit_row()
    assert (row.action, row.resource_type, row.resource_id, row.actor) == (
        AuditAction.CREATE,
        "coupons.coupon",
        str(coupon.pk),
        staff_user,
    )
    assert (row.endpoint, row.method, row.new_value["code"]) == (COUPONS, "POST", "SPRING25")


def test_coupon_create_with_a_campaign_attaches_it(staff_client, staff_user):
    campaign = CouponCampaignFactory()

    response = staff_client.post(COUPONS, coupon_body(campaign_id=str(campaign.pk)), format="json")

    assert response.status_code == 201
    coupon = Coupon.objects.get()
    assert CampaignCoupon.objects.filter(campaign=campaign, coupon=coupon).exists()
    assert response.json()["campaign_id"] == str(campaign.pk)
    rows = AdminAuditLog.objects.order_by("sequence").values_list("action", "resource_type", "actor")
    assert list(rows) == [
        (AuditAction.CREATE, "coupons.coupon", staff_user.pk),
        (AuditAction.CREATE, "coupons.campaigncoupon", staff_user.pk),
    ]


def test_coupon_create_with_a_code_taken_in_another_case_is_409(staff_client):
    CouponFactory(code="SPRING25")

    response = staff_client.post(COUPONS, coupon_body(code="Spring25"), format="json")

    assert_refused_and_nothing_written(response, status=409, code="coupon_code_taken")
    assert Coupon.objects.count() == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"discount_type": "credits", "discount_value": "100"}, "discount_type"),
        ({"coupon_type": "tier_specific_discount", "applicable_tiers": []}, "applicable_tiers"),
        ({"coupon_type": "duration_bonus", "discount_type": "months_free", "discount_value": "1.5"}, "discount_value"),
        ({"discount_value": "0"}, "discount_value"),
    ],
    ids=["credits-on-a-percentage-coupon", "tier-specific-without-tiers", "fractional-months", "zero-discount"],
)
def test_coupon_create_with_a_bad_shape_is_422_invalid_coupon_and_writes_nothing(staff_client, overrides, field):
    response = staff_client.post(COUPONS, coupon_body(**overrides), format="json")

    assert_refused_and_nothing_written(response, status=422, code="invalid_coupon")
    assert field in response.json()["errors"]
    assert not Coupon.objects.exists()
    assert not CouponUsageLimit.objects.exists()


def test_coupon_create_with_a_percentage_over_100_is_422_invalid_coupon_and_writes_nothing(staff_client):
    response = staff_client.post(COUPONS, coupon_body(discount_value="150.00"), format="json")

    assert_refused_and_nothing_written(response, status=422, code="invalid_coupon")
    assert response.json()["errors"]
    assert not Coupon.objects.exists()


def test_coupon_create_ending_before_it_starts_is_422_invalid_coupon_and_writes_nothing(staff_client):
    body = coupon_body(valid_from="2030-01-02T00:00:00Z", valid_until="2030-01-01T00:00:00Z")

    response = staff_client.post(COUPONS, body, format="json")

    assert_refused_and_nothing_written(response, status=422, code="invalid_coupon")
    assert not Coupon.objects.exists()


def test_coupon_create_with_a_missing_type_is_a_400_validation_problem(staff_client):
    response = staff_client.post(COUPONS, {"code": "NOTYPE"}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert "coupon_type" in response.json()["errors"]
    assert not Coupon.objects.exists()


def test_coupon_patch_updates_the_fields_sent_and_is_audited(staff_client, staff_user):
    coupon = CouponFactory(code="SUMMER", description="old")

    response = staff_client.patch(
        f"{COUPONS}{coupon.pk}/", {"description": "new", "discount_value": "30.00", "max_uses": 100}, format="json"
    )

    assert response.status_code == 200
    coupon.refresh_from_db()
    assert (coupon.description, coupon.discount_value, coupon.max_uses, coupon.code) == (
        "new",
        Decimal("30.00"),
        100,
        "SUMMER",
    )
    assert (response.json()["description"], response.json()["discount_value"]) == ("new", "30.00")
    row = only_audit_row()
    assert (row.action, row.resource_type, row.resource_id, row.actor) == (
        AuditAction.UPDATE,
        "coupons.coupon",
        str(coupon.pk),
        staff_user,
    )
    assert (row.previous_value["discount_value"], row.new_value["discount_value"]) == ("20.00", "30.00")


def test_coupon_patch_to_a_bad_shape_is_422_and_changes_nothing(staff_client):
    coupon = CouponFactory()

    response = staff_client.patch(f"{COUPONS}{coupon.pk}/", {"discount_type": "months_free"}, format="json")

    assert_refused_and_nothing_written(response, status=422, code="invalid_coupon")
    assert "discount_type" in response.json()["errors"]
    coupon.refresh_from_db()
    assert coupon.discount_type == DiscountType.PERCENTAGE


def test_coupon_patch_to_a_taken_code_is_409(staff_client):
    CouponFactory(code="TAKEN")
    coupon = CouponFactory(code="MINE")

    response = staff_client.patch(f"{COUPONS}{coupon.pk}/", {"code": "taken"}, format="json")

    assert_refused_and_nothing_written(response, status=409, code="coupon_code_taken")
    coupon.refresh_from_db()
    assert coupon.code == "MINE"


def test_coupon_delete_is_a_soft_delete_that_keeps_redemptions_and_is_idempotent(staff_client, staff_user):
    coupon = CouponFactory()
    redemption = CouponRedemptionFactory(coupon=coupon)

    first = staff_client.delete(f"{COUPONS}{coupon.pk}/")
    second = staff_client.delete(f"{COUPONS}{coupon.pk}/")

    assert (first.status_code, second.status_code) == (204, 204)
    coupon.refresh_from_db()
    assert coupon.deleted_at is not None
    assert (coupon.deleted_by, coupon.is_active) == (staff_user, False)
    redemption.refresh_from_db()
    assert redemption.coupon_id == coupon.pk
    row = only_audit_row()
    assert (row.action, row.resource_type, row.resource_id, row.actor) == (
        AuditAction.DELETE,
        "coupons.coupon",
        str(coupon.pk),
        staff_user,
    )
    assert row.previous_value["deleted_at"] is None
    listed = staff_client.get(COUPONS, {"deleted": "true"}).json()["results"]
    assert [item["id"] for item in listed] == [str(coupon.pk)]
    assert listed[0]["deleted_by"] == staff_user.pk


def test_a_deleted_coupon_cannot_be_changed_or_reactivated(staff_client):
    coupon = CouponFactory(is_active=False, deleted_at=timezone.now())

    activate = staff_client.post(f"{COUPONS}{coupon.pk}/activate/")

    assert_refused_and_nothing_written(activate, status=409, code="coupon_deleted")
    coupon.refresh_from_db()
    assert not coupon.is_active


def test_coupon_deactivate_then_activate_answer_200_and_are_audited(staff_client, staff_user):
    coupon = CouponFactory()

    deactivated = staff_client.post(f"{COUPONS}{coupon.pk}/deactivate/")
    coupon.refresh_from_db()
    inactive = coupon.is_active
    activated = staff_client.post(f"{COUPONS}{coupon.pk}/activate/")

    assert (deactivated.status_code, deactivated.json()["is_active"]) == (200, False)
    assert inactive is False
    assert (activated.status_code, activated.json()["is_active"]) == (200, True)
    coupon.refresh_from_db()
    assert coupon.is_active
    rows = AdminAuditLog.objects.order_by("sequence").values_list("action", "resource_type", "resource_id", "actor")
    assert list(rows) == [
        (AuditAction.DEACTIVATE, "coupons.coupon", str(coupon.pk), staff_user.pk),
        (AuditAction.ACTIVATE, "coupons.coupon", str(coupon.pk), staff_user.pk),
    ]


def test_an_unknown_coupon_id_is_404(staff_client):
    response = staff_client.post(f"{COUPONS}00000000-0000-0000-0000-000000000000/activate/")

    assert response.status_code == 404
    assert response.json()["code"] == "coupon_not_found"


def test_coupon_redemptions_lists_only_that_coupons_redemptions_paginated(staff_client):
    coupon = CouponFactory()
    now = timezone.now()
    newest = CouponRedemptionFactory(coupon=coupon, redemption_date=now)
    CouponRedemptionFactory(coupon=coupon, redemption_date=now - timedelta(hours=1))
    failed = CouponRedemptionFactory(
        coupon=coupon,
        redemption_date=now - timedelta(hours=2),
        status=RedemptionStatus.FAILED,
        failure_reason="coupon_user_limit_reached",
        use_number=None,
        user_use_number=None,
    )
    CouponRedemptionFactory()  # another coupon's

    first = staff_client.get(f"{COUPONS}{coupon.pk}/redemptions/", {"page_size": 2})
    last = staff_client.get(f"{COUPONS}{coupon.pk}/redemptions/", {"page_size": 2, "page": 2})

    assert first.status_code == 200
    body = first.json()
    assert body["count"] == 3 and body["next"]
    assert [row["id"] for row in body["results"]][0] == str(newest.pk)
    assert body["results"][0]["user_email"] == newest.user.email
    assert body["results"][0]["discount_applied_usd"] == "3.80"
    assert [(row["id"], row["status"], row["failure_reason"]) for row in last.json()["results"]] == [
        (str(failed.pk), "failed", "coupon_user_limit_reached")
    ]


def test_coupon_redemptions_of_an_unknown_coupon_is_404(staff_client):
    response = staff_client.get(f"{COUPONS}00000000-0000-0000-0000-000000000000/redemptions/")

    assert response.status_code == 404


# Campaigns


def campaign_body(**overrides) -> dict:
    return {
        "name": "Black Friday",
        "description": "Yearly sale",
        "starts_at": "2030-11-20T00:00:00Z",
        "ends_at": "2030-12-01T00:00:00Z",
        "budget_usd": "5000.00",
        **overrides,
    }


def test_campaign_create_answers_201_and_is_audited(staff_client, staff_user):
    response = staff_client.post(CAMPAIGNS, campaign_body(), format="json")

    assert response.status_code == 201
    campaign = CouponCampaign.objects.get()
    assert (campaign.name, campaign.budget_usd, campaign.spent_usd, campaign.created_by) == (
        "Black Friday",
        Decimal("5000.00"),
        Decimal("0.00"),
        staff_user,
    )
    body = response.json()
    assert (body["id"], body["budget_usd"], body["spent_usd"], body["coupon_count"]) == (
        str(campaign.pk),
        "5000.00",
        "0.00",
        0,
    )
    row = only_audit_row()
    assert (row.action, row.resource_type, row.resource_id, row.actor) == (
        AuditAction.CREATE,
        "coupons.couponcampaign",
        str(campaign.pk),
        staff_user,
    )


def test_campaign_create_ending_before_it_starts_is_422_invalid_campaign(staff_client):
    response = staff_client.post(CAMPAIGNS, campaign_body(ends_at="2030-11-01T00:00:00Z"), format="json")

    assert_refused_and_nothing_written(response, status=422, code="invalid_campaign")
    assert not CouponCampaign.objects.exists()


def test_campaign_patch_updates_and_is_audited(staff_client, staff_user):
    campaign = CouponCampaignFactory(name="Old name")

    response = staff_client.patch(
        f"{CAMPAIGNS}{campaign.pk}/", {"name": "New name", "budget_usd": "250.00"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["name"] == "New name"
    campaign.refresh_from_db()
    assert (campaign.name, campaign.budget_usd) == ("New name", Decimal("250.00"))
    row = only_audit_row()
    assert (row.action, row.resource_type, row.resource_id, row.actor) == (
        AuditAction.UPDATE,
        "coupons.couponcampaign",
        str(campaign.pk),
        staff_user,
    )
    assert (row.previous_value["name"], row.new_value["name"]) == ("Old name", "New name")


def test_campaign_patch_below_what_was_spent_is_422_and_changes_nothing(staff_client):
    campaign = CouponCampaignFactory(spent_usd=Decimal("300.00"))

    response = staff_client.patch(f"{CAMPAIGNS}{campaign.pk}/", {"budget_usd": "100.00"}, format="json")

    assert_refused_and_nothing_written(response, status=422, code="invalid_campaign")
    campaign.refresh_from_db()
    assert campaign.budget_usd == Decimal("1000.00")


def test_campaign_list_filters_by_activity_and_name_and_counts_coupons(staff_client):
    spring = CouponCampaignFactory(name="Spring promo")
    CampaignCouponFactory.create_batch(2, campaign=spring)
    CouponCampaignFactory(name="Winter promo", is_active=False)

    everything = staff_client.get(CAMPAIGNS).json()
    active = staff_client.get(CAMPAIGNS, {"is_active": "true"}).json()
    by_name = staff_client.get(CAMPAIGNS, {"name": "winter"}).json()

    assert everything["count"] == 2
    assert [(row["name"], row["coupon_count"]) for row in active["results"]] == [("Spring promo", 2)]
    assert [row["name"] for row in by_name["results"]] == ["Winter promo"]


def test_campaign_attach_list_and_detach_coupons(staff_client, staff_user):
    campaign = CouponCampaignFactory()
    coupon = CouponFactory(code="JOINER")
    CampaignCouponFactory(campaign=campaign, coupon=CouponFactory(code="ALREADY"))
    url = f"{CAMPAIGNS}{campaign.pk}/coupons/"

    attached = staff_client.post(url, {"coupon_id": str(coupon.pk)}, format="json")
    listed = staff_client.get(url)
    detached = staff_client.delete(f"{url}{coupon.pk}/")

    assert attached.status_code == 201
    link_id = attached.json()["id"]
    assert (attached.json()["campaign"], attached.json()["coupon"]) == (str(campaign.pk), str(coupon.pk))
    assert listed.status_code == 200
    assert sorted(row["code"] for row in listed.json()["results"]) == ["ALREADY", "JOINER"]
    assert detached.status_code == 204
    assert list(CampaignCoupon.objects.filter(campaign=campaign).values_list("coupon__code", flat=True)) == ["ALREADY"]
    assert Coupon.objects.filter(pk=coupon.pk, deleted_at__isnull=True).exists()
    rows = AdminAuditLog.objects.order_by("sequence").values_list("action", "resource_type", "resource_id", "actor")
    assert list(rows) == [
        (AuditAction.CREATE, "coupons.campaigncoupon", link_id, staff_user.pk),
        (AuditAction.DELETE, "coupons.campaigncoupon", link_id, staff_user.pk),
    ]


def test_campaign_attach_of_a_coupon_in_another_campaign_is_409(staff_client):
    other = CampaignCouponFactory()
    campaign = CouponCampaignFactory()

    response = staff_client.post(
        f"{CAMPAIGNS}{campaign.pk}/coupons/", {"coupon_id": str(other.coupon_id)}, format="json"
    )

    assert_refused_and_nothing_written(response, status=409, code="coupon_in_another_campaign")
    assert response.json()["campaign_id"] == str(other.campaign_id)
    assert list(CampaignCoupon.objects.values_list("campaign_id", flat=True)) == [other.campaign_id]


def test_campaign_detach_of_a_coupon_not_in_it_is_404(staff_client):
    campaign = CouponCampaignFactory()
    coupon = CouponFactory()

    response = staff_client.delete(f"{CAMPAIGNS}{campaign.pk}/coupons/{coupon.pk}/")

    assert_refused_and_nothing_written(response, status=404, code="coupon_not_in_campaign")


def test_campaign_generate_coupons_creates_unique_single_use_codes_with_one_audit_row(staff_client, staff_user):
    campaign = CouponCampaignFactory()

    response = staff_client.post(
        f"{CAMPAIGNS}{campaign.pk}/generate-coupons/",
        {
            "count": 25,
            "prefix": "bf-",
            "coupon_type": "fixed_amount_discount",
            "discount_type": "credits",
            "discount_value": "500",
        },
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["campaign_id"], body["count"]) == (str(campaign.pk), 25)
    codes = body["codes"]
    assert len(set(codes)) == 25
    assert all(code.startswith("BF-") and code == code.upper() for code in codes)
    coupons = Coupon.objects.filter(campaign_links__campaign=campaign)
    assert sorted(coupons.values_list("code", flat=True)) == sorted(codes)
    assert set(coupons.values_list("max_uses", "max_uses_per_user", "coupon_type", "discount_type")) == {
        (1, 1, CouponType.FIXED_AMOUNT_DISCOUNT, DiscountType.CREDITS)
    }
    assert set(coupons.values_list("discount_value", flat=True)) == {Decimal("500.00")}
    assert set(coupons.values_list("created_by", flat=True)) == {staff_user.pk}
    assert CouponUsageLimit.objects.filter(coupon__in=coupons).count() == 25
    row = only_audit_row()
    assert (row.action, row.resource_type, row.actor) == (AuditAction.CREATE, "coupons.coupon", staff_user)
    assert row.resource_id == f"campaign:{campaign.pk}"
    assert sorted(row.new_value["codes"]) == sorted(codes)
    assert row.new_value["count"] == 25


def test_campaign_generate_coupons_over_the_maximum_is_422_and_writes_nothing(staff_client):
    campaign = CouponCampaignFactory()

    response = staff_client.post(
        f"{CAMPAIGNS}{campaign.pk}/generate-coupons/",
        {
            "count": settings.COUPON_BULK_MAX + 1,
            "coupon_type": "percentage_discount",
            "discount_type": "percentage",
            "discount_value": "10",
        },
        format="json",
    )

    assert_refused_and_nothing_written(response, status=422, code="too_many_codes")
    assert not Coupon.objects.filter(campaign_links__campaign=campaign).exists()


@pytest.mark.parametrize(
    "template",
    [
        {"coupon_type": "percentage_discount", "discount_type": "credits", "discount_value": "10"},
        {"coupon_type": "percentage_discount", "discount_type": "percentage", "discount_value": "150"},
        {
            "coupon_type": "percentage_discount",
            "discount_type": "percentage",
            "discount_value": "10",
            "valid_from": "2030-01-02T00:00:00Z",
            "valid_until": "2030-01-01T00:00:00Z",
        },
    ],
    ids=["credits-on-a-percentage-coupon", "percentage-over-100", "ending-before-it-starts"],
)
def test_campaign_generate_coupons_with_a_bad_template_is_422_invalid_coupon(staff_client, template):
    campaign = CouponCampaignFactory()

    response = staff_client.post(f"{CAMPAIGNS}{campaign.pk}/generate-coupons/", {"count": 3, **template}, format="json")

    assert_refused_and_nothing_written(response, status=422, code="invalid_coupon")
    assert response.json()["errors"]
    assert not Coupon.objects.exists()


def test_campaign_delete_with_redemptions_is_409_and_keeps_it(staff_client):
    link = CampaignCouponFactory()
    CouponRedemptionFactory(coupon=link.coupon, campaign=link.campaign)

    response = staff_client.delete(f"{CAMPAIGNS}{link.campaign_id}/")

    assert_refused_and_nothing_written(response, status=409, code="campaign_has_redemptions")
    assert CouponCampaign.objects.filter(pk=link.campaign_id).exists()
    assert CampaignCoupon.objects.filter(pk=link.pk).exists()


def test_campaign_delete_without_redemptions_answers_204_keeps_its_coupons_and_is_audited(staff_client, staff_user):
    link = CampaignCouponFactory()

    response = staff_client.delete(f"{CAMPAIGNS}{link.campaign_id}/")

    assert response.status_code == 204
    assert not CouponCampaign.objects.filter(pk=link.campaign_id).exists()
    assert not CampaignCoupon.objects.exists()
    assert Coupon.objects.filter(pk=link.coupon_id).exists()
    row = only_audit_row()
    assert (row.action, row.resource_type, row.resource_id, row.actor) == (
        AuditAction.DELETE,
        "coupons.couponcampaign",
        str(link.campaign_id),
        staff_user,
    )


# Fraud detections


def test_fraud_detection_list_filters_by_severity_flag_and_resolution(staff_client, staff_user):
    medium = CouponFraudDetectionFactory(severity=FraudSeverity.MEDIUM)
    high = CouponFraudDetectionFactory(severity=FraudSeverity.HIGH)
    resolved = CouponFraudDetectionFactory(
        severity=FraudSeverity.LOW,
        is_flagged=False,
        resolved_at=timezone.now(),
        resolved_by=staff_user,
        resolution="false positive",
    )

    def ids(**params):
        response = staff_client.get(DETECTIONS, params)
        assert response.status_code == 200
        return {row["id"] for row in response.json()["results"]}

    assert ids() == {str(medium.pk), str(high.pk), str(resolved.pk)}
    assert ids(severity="high") == {str(high.pk)}
    assert ids(is_flagged="true") == {str(medium.pk), str(high.pk)}
    assert ids(is_flagged="false") == {str(resolved.pk)}
    assert ids(resolved="true") == {str(resolved.pk)}
    assert ids(resolved="false") == {str(medium.pk), str(high.pk)}
    row = staff_client.get(DETECTIONS, {"severity": "high"}).json()["results"][0]
    assert (row["coupon_code"], row["user_email"]) == (high.coupon.code, high.user.email)


def test_fraud_detection_resolve_clears_the_flag_and_is_audited(staff_client, staff_user):
    detection = CouponFraudDetectionFactory()

    response = staff_client.post(
        f"{DETECTIONS}{detection.pk}/resolve/", {"resolution": "  known customer  "}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["is_flagged"], body["resolution"], body["resolved_by"]) == (False, "known customer", staff_user.pk)
    detection.refresh_from_db()
    assert detection.is_flagged is False
    assert detection.resolved_at is not None
    assert (detection.resolved_by, detection.resolution) == (staff_user, "known customer")
    row = only_audit_row()
    assert (row.action, row.resource_type, row.resource_id, row.actor) == (
        AuditAction.RESOLVE,
        "coupons.couponfrauddetection",
        str(detection.pk),
        staff_user,
    )
    assert (row.previous_value["is_flagged"], row.new_value["is_flagged"]) == (True, False)


def test_fraud_detection_resolved_twice_is_409_and_keeps_the_first_resolution(staff_client):
    detection = CouponFraudDetectionFactory()
    url = f"{DETECTIONS}{detection.pk}/resolve/"
    staff_client.post(url, {"resolution": "first"}, format="json")

    response = staff_client.post(url, {"resolution": "second"}, format="json")

    assert response.status_code == 409
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "fraud_detection_already_resolved"
    detection.refresh_from_db()
    assert detection.resolution == "first"
    assert successful_audit_rows().count() == 1
    assert AdminAuditLog.objects.filter(status_code=409).count() == 1


@pytest.mark.parametrize("resolution", ["", "   "])
def test_fraud_detection_resolve_without_a_resolution_is_a_400_validation_problem(staff_client, resolution):
    detection = CouponFraudDetectionFactory()

    response = staff_client.post(f"{DETECTIONS}{detection.pk}/resolve/", {"resolution": resolution}, format="json")

    assert_refused_and_nothing_written(response, status=400, code="validation_error")
    assert "resolution" in response.json()["errors"]
    detection.refresh_from_db()
    assert (detection.is_flagged, detection.resolved_at, detection.resolution) == (True, None, "")


def test_fraud_detection_resolve_of_an_unknown_id_is_404(staff_client):
    response = staff_client.post(
        f"{DETECTIONS}00000000-0000-0000-0000-000000000000/resolve/", {"resolution": "x"}, format="json"
    )

    assert response.status_code == 404
    assert response.json()["code"] == "fraud_detection_not_found"


# Coupon performance

DAY_ONE = date(2024, 3, 10)
DAY_TWO = date(2024, 3, 11)


@pytest.fixture
def performance_history():
    """Day one: SPRING (in the Spring campaign) redeemed by two users and refused once; LOOSE (no
    campaign) redeemed by the first. Day two: SPRING redeemed by a third user. Only the first user
    paid after redeeming: the second paid before, the third's payment failed."""
    campaign = CouponCampaignFactory(name="Spring campaign")
    spring = CouponFactory(code="SPRING")
    CampaignCouponFactory(campaign=campaign, coupon=spring)
    loose = CouponFactory(code="LOOSE")
    payer, early_payer, failed_payer, _refused = (
        CouponRedemptionFactory(coupon=spring, redemption_date=at(DAY_ONE, 9)).user,
        CouponRedemptionFactory(
            coupon=spring,
            redemption_date=at(DAY_ONE, 10),
            discount_applied_usd=Decimal("5.00"),
            final_amount_usd=Decimal("45.00"),
        ).user,
        CouponRedemptionFactory(
            coupon=spring,
            redemption_date=at(DAY_TWO, 10),
            discount_applied_usd=Decimal("2.00"),
            final_amount_usd=Decimal("8.00"),
        ).user,
        CouponRedemptionFactory(
            coupon=spring,
            redemption_date=at(DAY_ONE, 11),
            status=RedemptionStatus.FAILED,
            failure_reason="coupon_user_limit_reached",
            use_number=None,
            user_use_number=None,
            discount_applied_usd=Decimal("0.00"),
            final_amount_usd=Decimal("0.00"),
        ).user,
    )
    CouponRedemptionFactory(
        coupon=loose,
        user=payer,
        redemption_date=at(DAY_ONE, 15),
        discount_applied_usd=Decimal("10.00"),
        final_amount_usd=Decimal("90.00"),
    )
    PaymentTransactionFactory(user=payer, completed_at=at(DAY_TWO, 8))
    PaymentTransactionFactory(user=early_payer, completed_at=at(DAY_ONE, 1))
    PaymentTransactionFactory(user=failed_payer, status=PaymentStatus.FAILED, completed_at=at(DAY_TWO, 11))
    for day in (DAY_ONE, DAY_TWO):
        coupon_analytics_snapshot(day=day)
    return {"campaign": campaign, "spring": spring, "loose": loose}


def test_coupon_performance_sums_the_snapshots_by_coupon_campaign_and_in_total(staff_client, performance_history):
    spring, loose, campaign = (
        performance_history["spring"],
        performance_history["loose"],
        performance_history["campaign"],
    )

    response = staff_client.get(PERFORMANCE, {"date_from": "2024-03-10", "date_to": "2024-03-11"})

    assert response.status_code == 200
    body = response.json()
    assert (body["date_from"], body["date_to"]) == ("2024-03-10", "2024-03-11")
    figures = ("redemptions", "failed_redemptions", "unique_users", "discount_total_usd", "revenue_usd", "conversions")

    def row_of(row):
        return (row["key"], row["name"], *(row[name] for name in figures), row["conversion_rate"])

    assert [row_of(row) for row in body["by_coupon"]] == [
        (str(loose.pk), "LOOSE", 1, 0, 1, "10.00", "90.00", 1, "1.0000"),
        (str(spring.pk), "SPRING", 3, 1, 3, "10.80", "68.20", 1, "0.3333"),
    ]
    assert sorted(row_of(row) for row in body["by_campaign"]) == [
        ("", "", 1, 0, 1, "10.00", "90.00", 1, "1.0000"),
        (str(campaign.pk), "Spring campaign", 3, 1, 3, "10.80", "68.20", 1, "0.3333"),
    ]
    assert row_of(body["totals"]) == ("", "all", 4, 1, 4, "20.80", "158.20", 2, "0.5000")


def test_coupon_performance_covers_only_the_days_asked(staff_client, performance_history):
    spring = performance_history["spring"]

    body = staff_client.get(PERFORMANCE, {"date_from": "2024-03-11", "date_to": "2024-03-11"}).json()

    assert [(row["key"], row["redemptions"], row["conversions"]) for row in body["by_coupon"]] == [
        (str(spring.pk), 1, 0)
    ]
    assert (body["totals"]["redemptions"], body["totals"]["discount_total_usd"]) == (1, "2.00")


def test_coupon_performance_of_one_campaign(staff_client, performance_history):
    campaign = performance_history["campaign"]

    body = staff_client.get(
        PERFORMANCE, {"date_from": "2024-03-10", "date_to": "2024-03-11", "campaign_id": str(campaign.pk)}
    ).json()

    assert [row["name"] for row in body["by_coupon"]] == ["SPRING"]
    assert [row["key"] for row in body["by_campaign"]] == [str(campaign.pk)]
    assert (body["totals"]["redemptions"], body["totals"]["revenue_usd"]) == (3, "68.20")


def test_coupon_performance_keeps_each_currency_apart_and_the_usd_fields_usd_only(staff_client, performance_history):
    # given SPRING also redeemed at checkouts paid in euros and in yen on day one
    spring, campaign = performance_history["spring"], performance_history["campaign"]
    for discount, final, currency in (("4.00", "36.00", "eur"), ("1.00", "9.00", "eur"), ("300.00", "2600.00", "jpy")):
        CouponRedemptionFactory(
            coupon=spring,
            redemption_date=at(DAY_ONE, 12),
            discount_applied_usd=Decimal(discount),
            final_amount_usd=Decimal(final),
            currency=currency,
        )
    coupon_analytics_snapshot(day=DAY_ONE)

    body = staff_client.get(PERFORMANCE, {"date_from": "2024-03-10", "date_to": "2024-03-11"}).json()

    (spring_row,) = [row for row in body["by_coupon"] if row["key"] == str(spring.pk)]
    assert (spring_row["discount_total_usd"], spring_row["revenue_usd"]) == ("10.80", "68.20")  # as before
    assert spring_row["by_currency"] == {
        "eur": {"discount_total": "5.00", "revenue": "45.00"},
        "jpy": {"discount_total": "300.00", "revenue": "2600.00"},
        "usd": {"discount_total": "10.80", "revenue": "68.20"},
    }
    (campaign_row,) = [row for row in body["by_campaign"] if row["key"] == str(campaign.pk)]
    assert campaign_row["by_currency"] == spring_row["by_currency"]
    assert body["totals"]["by_currency"] == {
        "eur": {"discount_total": "5.00", "revenue": "45.00"},
        "jpy": {"discount_total": "300.00", "revenue": "2600.00"},
        "usd": {"discount_total": "20.80", "revenue": "158.20"},
    }
    assert (body["totals"]["redemptions"], body["totals"]["revenue_usd"]) == (7, "158.20")


def test_coupon_performance_of_days_without_snapshots_is_zero(staff_client):
    body = staff_client.get(PERFORMANCE, {"date_from": "2024-01-01", "date_to": "2024-01-31"}).json()

    assert (body["by_coupon"], body["by_campaign"]) == ([], [])
    assert (body["totals"]["redemptions"], body["totals"]["revenue_usd"], body["totals"]["conversion_rate"]) == (
        0,
        "0.00",
        "0.0000",
    )


def test_coupon_performance_with_date_from_after_date_to_is_400(staff_client):
    response = staff_client.get(PERFORMANCE, {"date_from": "2024-03-11", "date_to": "2024-03-10"})

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "validation_error"
    assert "date_to" in response.json()["errors"]


def test_coupon_performance_without_dates_is_400(staff_client):
    response = staff_client.get(PERFORMANCE)

    assert response.status_code == 400
    assert {"date_from", "date_to"} <= set(response.json()["errors"])


def test_the_redemption_history_survives_in_the_report_after_the_coupon_is_deleted(staff_client, performance_history):
    spring = performance_history["spring"]
    staff_client.delete(f"{COUPONS}{spring.pk}/")

    body = staff_client.get(PERFORMANCE, {"date_from": "2024-03-10", "date_to": "2024-03-11"}).json()

    assert CouponRedemption.objects.filter(coupon=spring).count() == 4
    assert body["totals"]["redemptions"] == 4
