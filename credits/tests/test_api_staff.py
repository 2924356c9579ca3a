"""Staff endpoints: grants, providers, vendor prices and the margin approval workflow."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import AdminAuditLog
from billing_project.errors import RuleViolation
from credits.models import CreditAllocation, MarginAuditLog, ModelProviderPricing, PricingConfig, UserCreditBalance
from credits.services.pricing_changes import price_book_normalized
from credits.tests.conftest import fund, usage_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]

GRANT = "/api/v1/admin/credits/grant/"
CONFIGS = "/api/v1/admin/pricing-configs/"


@pytest.fixture
def second_staff_client(django_user_model):
    from rest_framework.test import APIClient

    from conftest import access_token_for, bearer, role_grant

    approver = role_grant(
        django_user_model.objects.create_user(
            username="approver@example.com", email="approver@example.com", password="x", is_staff=True
        ),
        "finance",
    )
    client = APIClient()
    client.credentials(**bearer(access_token_for(approver)))
    client.staff = approver
    return client


def test_staff_grant_adds_credits_and_is_audited(staff_client, staff_user, user):
    response = staff_client.post(GRANT, {"user_id": user.pk, "amount": 500, "reason": "outage credit"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["balance_after"] == 500
    allocation = CreditAllocation.objects.get(pk=body["allocation_id"])
    assert (allocation.source, allocation.granted_by, allocation.reason) == ("admin_grant", staff_user, "outage credit")
    row = AdminAuditLog.objects.get(action="grant")
    assert (row.actor, row.resource_id, row.new_value["amount"]) == (staff_user, str(allocation.pk), 500)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 0, "reason": "x"}, "amount"),
        ({"amount": 5}, "reason"),
        ({"amount": 5, "reason": "x", "source": "coupon"}, "source"),
    ],
)
def test_staff_grant_with_bad_input_is_a_400_and_writes_nothing(staff_client, user, body, field):
    response = staff_client.post(GRANT, {"user_id": user.pk, **body}, format="json")

    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert CreditAllocation.objects.count() == 0
    assert not AdminAuditLog.objects.filter(action="grant").exists()


def test_staff_grant_with_an_expiry_in_the_past_is_refused(staff_client, user):
    past = (timezone.now() - timedelta(days=1)).isoformat()

    response = staff_client.post(
        GRANT, {"user_id": user.pk, "amount": 5, "reason": "x", "expires_at": past}, format="json"
    )

    assert response.status_code == 422
    assert response.json()["code"] == "expiry_in_past"


def test_staff_grant_to_an_unknown_user_is_a_404(staff_client):
    response = staff_client.post(GRANT, {"user_id": 999999, "amount": 5, "reason": "x"}, format="json")

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_user"


def test_provider_create_and_update_are_audited(staff_client):
    created = staff_client.post("/api/v1/admin/providers/", {"name": "mistral", "api_type": "mistral"}, format="json")
    changed = staff_client.patch(
        f"/api/v1/admin/providers/{created.json()['id']}/", {"is_enabled": False}, format="json"
    )

    assert created.status_code == 201
    assert (changed.status_code, changed.json()["is_enabled"]) == (200, False)
    assert list(AdminAuditLog.objects.order_by("sequence").values_list("action", flat=True)) == ["create", "update"]


def test_new_model_price_ends_the_one_in_force_and_applies_by_request_start(
    staff_client, service_client, user, django_capture_on_commit_callbacks
):
    fund(user, 10_000)
    change_at = timezone.now() - timedelta(minutes=10)

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            "/api/v1/admin/model-pricing/",
            {
                "provider": "openai",
                "model_name": "gpt-4o",
                "input_price_per_1k": "0.0025",
                "output_price_per_1k": "0.01",
                "effective_from": change_at.isoformat(),
            },
            format="json",
        )
    before = usage_event(user, request_started_at=(change_at - timedelta(minutes=5)).isoformat())
    after = usage_event(user, request_started_at=(change_at + timedelta(minutes=5)).isoformat())
    old_price = service_client.post("/api/v1/usage/record/", before, format="json").json()
    new_price = service_client.post("/api/v1/usage/record/", after, format="json").json()

    assert response.status_code == 201, response.json()
    assert response.json()["price_change_percent_input"] == "-50.00"
    prices = ModelProviderPricing.objects.filter(model_name="gpt-4o").order_by("effective_from")
    assert [price.effective_until for price in prices] == [change_at, None]
    assert (old_price["vendor_cost"], new_price["vendor_cost"]) == ("0.0350000000", "0.0225000000")
    assert MarginAuditLog.objects.filter(scope__model_name="gpt-4o").count() == 1


def test_staff_price_with_tiers_and_fees_prices_a_long_batch_request(
    staff_client, service_client, user, django_capture_on_commit_callbacks
):
    fund(user, 1_000_000)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            "/api/v1/admin/model-pricing/",
            {
                "provider": "openai",
                "model_name": "gpt-long",
                "input_price_per_1k": "0.002",
                "output_price_per_1k": "0.008",
                "context_tiers": [{"above_tokens": 100000, "prices": {"input": "0.004", "output": "0.016"}}],
                "service_tiers": {"batch": {"prices": {"input": "0.001", "output": "0.004"}}},
                "request_fees": {"web_search": "0.01"},
                "effective_from": (timezone.now() - timedelta(hours=1)).isoformat(),
            },
            format="json",
        )
    event = usage_event(
        user,
        model="gpt-long",
        input_tokens=150_000,
        output_tokens=1000,
        service_tier="batch",
        fee_units={"web_search": 2},
    )

    recorded = service_client.post("/api/v1/usage/record/", event, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["context_tiers"][0]["prices"] == {"input": "0.004", "output": "0.016"}
    # above 100k, batch: the higher of the tier and batch prices: 150 x 0.004 + 1 x 0.016 + 2 x 0.01
    assert recorded.json()["vendor_cost"] == "0.6360000000"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("context_tiers", [{"above_tokens": 0, "prices": {"input": "1"}}]),
        ("context_tiers", [{"above_tokens": 10, "prices": {"speed": "1"}}]),
        ("service_tiers", {"turbo": {"prices": {}}}),
        ("request_fees", {"web_search": "-1"}),
    ],
)
def test_a_malformed_price_book_field_is_a_422_naming_it(staff_client, field, value):
    response = staff_client.post(
        "/api/v1/admin/model-pricing/",
        {
            "provider": "openai",
            "model_name": "gpt-x",
            "input_price_per_1k": "0.002",
            "output_price_per_1k": "0.008",
            field: value,
        },
        format="json",
    )

    assert response.status_code == 422, response.json()
    assert response.json()["code"] == "invalid_price"
    assert response.json()["field"].startswith(field)
    assert not ModelProviderPricing.objects.filter(model_name="gpt-x").exists()


@pytest.mark.parametrize("name", ["web\x00search", "\ud800"], ids=["nul", "lone_surrogate"])
def test_a_fee_name_no_column_or_response_can_hold_is_refused_by_the_price_book(name):
    # a price book also comes from price files and the console, which the API's parser never sees
    with pytest.raises(RuleViolation) as refused:
        price_book_normalized(request_fees={name: "0.01"})

    assert (refused.value.code, refused.value.extra) == ("invalid_price", {"field": "request_fees"})


def test_margin_change_needs_another_staff_members_approval(
    staff_client, staff_user, second_staff_client, service_client, user, django_capture_on_commit_callbacks
):
    fund(user, 10_000)
    proposed = staff_client.post(
        CONFIGS,
        {"scope_type": "model", "model_name": "gpt-4o", "margin_multiplier": "3.0", "reason": "vendor_price_spike"},
        format="json",
    )
    config_id = proposed.json()["id"]
    pending_charge = service_client.post("/api/v1/usage/record/", usage_event(user), format="json").json()

    own = staff_client.post(f"{CONFIGS}{config_id}/approve/")
    with django_capture_on_commit_callbacks(execute=True):
        approved = second_staff_client.post(f"{CONFIGS}{config_id}/approve/")
    started = timezone.now()  # the change is in force from its creation on
    later_event = usage_event(
        user, request_started_at=started.isoformat(), request_completed_at=(started + timedelta(seconds=1)).isoformat()
    )
    charged = service_client.post("/api/v1/usage/record/", later_event, format="json").json()

    assert proposed.status_code == 201
    assert (proposed.json()["approval_status"], proposed.json()["previous_multiplier"]) == ("pending", None)
    assert pending_charge["credits_deducted"] == 70  # free tier 2.0 while pending
    assert (own.status_code, own.json()["code"]) == (403, "self_approval")
    assert (approved.status_code, approved.json()["approval_status"]) == (200, "approved")
    assert charged["credits_deducted"] == 105  # 0.035 x 3.0
    changes = list(MarginAuditLog.objects.filter(pricing_config_id=config_id).values_list("change_type", flat=True))
    assert sorted(changes) == ["approved", "created"]
    committed = (
        AdminAuditLog.objects.filter(status_code__lt=400)
        .exclude(resource_type="billing_project.servicetoken")  # the service_client's own token
        .order_by("sequence")
    )
    assert list(committed.values_list("action", flat=True)) == ["create", "approve"]
    assert AdminAuditLog.objects.get(status_code=403).resource_id == ""  # the refused self-approval, logged


def test_rejecting_a_margin_change_needs_a_reason_and_keeps_it_out_of_force(staff_client, second_staff_client):
    config = staff_client.post(
        CONFIGS,
        {"scope_type": "tier", "subscription_tier": "pro", "margin_multiplier": "1.1", "reason": "promo"},
        format="json",
    ).json()

    without = second_staff_client.post(f"{CONFIGS}{config['id']}/reject/", {}, format="json")
    rejected = second_staff_client.post(f"{CONFIGS}{config['id']}/reject/", {"reason": "too low"}, format="json")
    approve_after = second_staff_client.post(f"{CONFIGS}{config['id']}/approve/")

    assert without.status_code == 400
    assert rejected.json()["approval_status"] == "rejected"
    assert (approve_after.status_code, approve_after.json()["code"]) == (409, "not_pending")
    assert PricingConfig.objects.get(pk=config["id"]).approval_status == "rejected"


def test_margin_change_with_fields_outside_its_scope_is_refused(staff_client):
    response = staff_client.post(
        CONFIGS, {"scope_type": "tier", "model_name": "gpt-4o", "margin_multiplier": "2", "reason": "x"}, format="json"
    )

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_scope"
    assert PricingConfig.objects.filter(approval_status="pending").count() == 0


def test_simulate_reports_the_margin_and_revenue_a_pending_change_would_move(staff_client, service_client, user):
    fund(user, 10_000)
    for _ in range(4):
        service_client.post("/api/v1/usage/record/", usage_event(user), format="json")  # 0.035 vendor, free 2.0
    config = staff_client.post(
        CONFIGS,
        {"scope_type": "tier", "subscription_tier": "free", "margin_multiplier": "2.5", "reason": "reprice"},
        format="json",
    ).json()

    response = staff_client.post(f"{CONFIGS}{config['id']}/simulate/")

    assert response.status_code == 200
    body = response.json()
    assert (body["requests"], body["affected_requests"]) == (4, 4)
    assert body["vendor_cost_usd"] == "0.14"
    assert (body["current_revenue_usd"], body["projected_revenue_usd"]) == ("0.28", "0.35")
    assert body["expected_margin_change_usd"] == "0.07"
    assert UserCreditBalance.objects.get(user=user).amount == 10_000 - 4 * 70
    assert Decimal(body["expected_revenue_impact_usd"]) == Decimal("0.07")
