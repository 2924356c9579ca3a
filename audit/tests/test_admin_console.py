"""The admin console: every page opens, every console write is audited in the change's own transaction,
and ledgers, audit rows and coupons cannot be edited or deleted from it."""

from decimal import Decimal

import pytest
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from audit.admin_base import AuditedModelAdmin, ReadOnlyModelAdmin
from audit.models import AdminAuditLog, AuditAction
from audit.tests import factories as audit_factories
from audit.tests.console import admin_url, change_form_data
from billing_project.tests import factories as platform_factories
from coupons.models import Coupon
from coupons.tests import factories as coupon_factories
from credits.models import ApprovalStatus, PricingConfig
from credits.tests import factories as credit_factories
from licensing.models import PerpetualLicense
from licensing.tests import factories as licensing_factories
from subscriptions.models import TierConfig
from subscriptions.tests import factories as subscription_factories

User = get_user_model()

APPS = ("audit", "billing_project", "coupons", "credits", "licensing", "subscriptions")
FACTORIES = {
    factory_class._meta.model: factory_class
    for module in (
        audit_factories,
        platform_factories,
        coupon_factories,
        credit_factories,
        licensing_factories,
        subscription_factories,
    )
    for factory_class in platform_factories.model_factories(module)
}
REGISTERED = sorted(admin.site._registry, key=lambda model: model._meta.label)
EDITABLE = {
    "subscriptions.TierConfig",
    "subscriptions.Subscription",
    "subscriptions.BillingInvoice",
    "subscriptions.PaymentTransaction",
    "subscriptions.ProrationEvent",
    "licensing.PerpetualLicense",
    "licensing.LicenseActivation",
    "licensing.VersionUpgrade",
    "credits.Provider",
    "credits.ModelProviderPricing",
    "credits.PricingConfig",
    "credits.CreditPack",
    "coupons.CouponCampaign",
    "coupons.Coupon",
    "coupons.CampaignCoupon",
    "coupons.CouponValidationRule",
    "billing_project.WebhookEndpoint",
}
TRACKED_READ_ONLY = {
    "credits.AutoRecharge",
    "coupons.CouponFraudDetection",
    "coupons.CouponRedemption",
    "coupons.CouponUsageLimit",
    "subscriptions.DunningAttempt",
    "subscriptions.UserEntitlement",
}


def label(model) -> str:
    return model._meta.label


def test_every_model_is_registered_read_only_or_audited():
    for app_label in APPS:
        for model in apps.get_app_config(app_label).get_models():
            model_admin = admin.site._registry[model]
            expected = AuditedModelAdmin if label(model) in EDITABLE else ReadOnlyModelAdmin
            assert isinstance(model_admin, expected), label(model)


def test_auditlog_tracks_business_models_but_not_ledgers_or_events():
    tracked = {
        label(model)
        for app_label in APPS
        for model in apps.get_app_config(app_label).get_models()
        if auditlog.contains(model)
    }

    assert tracked == EDITABLE | TRACKED_READ_ONLY
    assert not auditlog.contains(User)


@pytest.mark.django_db
@pytest.mark.parametrize("model", REGISTERED, ids=label)
def test_changelist_search_and_add_pages_open(admin_client, admin_user, rf, model):
    model_admin = admin.site._registry[model]
    request = rf.get("/admin/")
    request.user = admin_user

    assert admin_client.get(admin_url(model, "changelist")).status_code == 200
    assert admin_client.get(admin_url(model, "changelist"), {"q": "x"}).status_code == 200
    add_status = 200 if model_admin.has_add_permission(request) else 403
    assert admin_client.get(admin_url(model, "add")).status_code == add_status


@pytest.mark.django_db
@pytest.mark.parametrize("model", [model for model in REGISTERED if model in FACTORIES], ids=label)
def test_list_change_and_history_pages_open_with_a_row(admin_client, model):
    row = FACTORIES[model]()

    assert admin_client.get(admin_url(model, "changelist")).status_code == 200
    assert admin_client.get(admin_url(model, "change", row.pk)).status_code == 200
    if auditlog.contains(model):
        assert admin_client.get(admin_url(model, "auditlog", row.pk)).status_code == 200


@pytest.mark.django_db
def test_console_change_writes_one_update_audit_row(admin_client, admin_user):
    # given
    tier = subscription_factories.TierConfigFactory(monthly_price_usd=Decimal("19.00"))
    url = admin_url(TierConfig, "change", tier.pk)
    data = change_form_data(admin_client.get(url)) | {"monthly_price_usd": "21.00"}
    rows_before = AdminAuditLog.objects.count()

    # when
    response = admin_client.post(url, data)

    # then
    assert response.status_code == 302
    tier.refresh_from_db()
    assert tier.monthly_price_usd == Decimal("21.00")
    assert AdminAuditLog.objects.count() == rows_before + 1
    row = AdminAuditLog.objects.get(action=AuditAction.UPDATE)
    assert row.actor == admin_user
    assert (row.resource_type, row.resource_id) == ("subscriptions.tierconfig", str(tier.pk))
    assert row.previous_value["monthly_price_usd"] == "19.00"
    assert row.new_value["monthly_price_usd"] == "21.00"
    assert (row.endpoint, row.method, row.status_code) == (url, "POST", 302)  # the redirect the console answered


@pytest.mark.django_db
def test_console_change_keeps_object_history_without_updated_at(admin_client):
    tier = subscription_factories.TierConfigFactory(monthly_price_usd=Decimal("19.00"))
    url = admin_url(TierConfig, "change", tier.pk)

    admin_client.post(url, change_form_data(admin_client.get(url)) | {"monthly_price_usd": "21.00"})

    entry = LogEntry.objects.get_for_object(tier).get(action=LogEntry.Action.UPDATE)
    assert entry.changes_dict == {"monthly_price_usd": ["19.00", "21.00"]}


@pytest.mark.django_db
def test_failed_console_change_rolls_back_with_its_audit_row_and_records_the_failure(admin_client, monkeypatch):
    # given: saving the form fails after the change and its audit row were written
    tier = subscription_factories.TierConfigFactory(monthly_price_usd=Decimal("19.00"))
    url = admin_url(TierConfig, "change", tier.pk)
    data = change_form_data(admin_client.get(url)) | {"monthly_price_usd": "21.00"}
    written_before_failure = []

    def failing_save_related(request, form, formsets, change):
        written_before_failure.append(AdminAuditLog.objects.filter(action=AuditAction.UPDATE).count())
        raise RuntimeError("disk full")

    monkeypatch.setattr(admin.site._registry[TierConfig], "save_related", failing_save_related)
    admin_client.raise_request_exception = False

    # when
    response = admin_client.post(url, data)

    # then
    assert response.status_code == 500
    assert written_before_failure == [1]
    tier.refresh_from_db()
    assert tier.monthly_price_usd == Decimal("19.00")
    failure = AdminAuditLog.objects.get()
    assert (failure.status_code, failure.method, failure.endpoint) == (500, "POST", url)
    assert failure.resource_type == "subscriptions.tierconfig"
    assert failure.error_message == "RuntimeError: disk full"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "factory_class",
    [audit_factories.AdminAuditLogFactory, credit_factories.CreditDeductionLedgerFactory],
    ids=lambda factory_class: factory_class._meta.model.__name__,
)
def test_read_only_admins_refuse_add_change_and_delete(admin_client, factory_class):
    row = factory_class()
    model = type(row)
    rows_before = model.objects.count()

    assert admin_client.get(admin_url(model, "add")).status_code == 403
    assert admin_client.post(admin_url(model, "add"), {}).status_code == 403
    assert admin_client.post(admin_url(model, "change", row.pk), {}).status_code == 403
    assert admin_client.get(admin_url(model, "delete", row.pk)).status_code == 403
    assert admin_client.post(admin_url(model, "delete", row.pk), {"post": "yes"}).status_code == 403
    assert model.objects.count() == rows_before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "factory_class",
    [coupon_factories.CouponFactory, coupon_factories.CouponCampaignFactory],
    ids=lambda factory_class: factory_class._meta.model.__name__,
)
def test_coupons_and_campaigns_cannot_be_hard_deleted(admin_client, factory_class):
    row = factory_class()
    model = type(row)

    response = admin_client.post(admin_url(model, "delete", row.pk), {"post": "yes"})

    assert response.status_code == 403
    assert model.objects.filter(pk=row.pk).exists()


@pytest.mark.django_db
def test_coupon_list_shows_soft_deleted_coupons(admin_client):
    deleted = coupon_factories.CouponFactory(deleted_at=timezone.now())

    response = admin_client.get(admin_url(Coupon, "changelist"))

    assert list(response.context["cl"].result_list) == [deleted]
    assert "is_deleted" in response.context["cl"].list_display
    assert admin.site._registry[Coupon].is_deleted(deleted) is True


@pytest.mark.django_db
def test_coupon_added_in_the_console_is_stored_upper_case_with_its_creator(admin_client, admin_user):
    response = admin_client.post(
        admin_url(Coupon, "add"),
        {
            "code": "spring25",
            "coupon_type": "percentage_discount",
            "discount_type": "percentage",
            "discount_value": "25",
            "valid_from_0": "2025-03-01",
            "valid_from_1": "00:00:00",
            "max_uses_per_user": "1",
            "is_active": "on",
        },
    )

    assert response.status_code == 302
    coupon = Coupon.objects.get()
    assert (coupon.code, coupon.created_by) == ("SPRING25", admin_user)
    row = AdminAuditLog.objects.get(action=AuditAction.CREATE)
    assert (row.resource_id, row.new_value["code"]) == (str(coupon.pk), "SPRING25")


@pytest.mark.django_db
def test_pricing_config_added_in_the_console_awaits_approval_whatever_the_form_says(admin_client, admin_user):
    response = admin_client.post(
        admin_url(PricingConfig, "add"),
        {
            "scope_type": "tier",
            "subscription_tier": "pro",
            "margin_strategy": "fixed_percentage",
            "margin_multiplier": "1.4",
            "effective_from_0": "2025-03-01",
            "effective_from_1": "00:00:00",
            "reason": "promotion",
            "requires_approval": "on",
            "is_active": "on",
            "monitored": "on",
            "approval_status": "approved",
            "approved_by": str(admin_user.pk),
        },
    )

    assert response.status_code == 302
    config = PricingConfig.objects.get()
    assert (config.created_by, config.approved_by) == (admin_user, None)
    assert config.approval_status == ApprovalStatus.PENDING


@pytest.mark.django_db
def test_license_list_masks_the_key_and_the_change_page_shows_it(admin_client):
    perpetual_license = licensing_factories.PerpetualLicenseFactory()
    masked = f"REPHLO-****-****-****-{perpetual_license.license_key[-4:]}"

    listing = admin_client.get(admin_url(PerpetualLicense, "changelist")).content.decode()
    change_page = admin_client.get(admin_url(PerpetualLicense, "change", perpetual_license.pk)).content.decode()

    assert perpetual_license.license_key not in listing
    assert masked in listing
    assert perpetual_license.license_key in change_page


@pytest.mark.django_db
def test_license_history_keeps_the_key_masked(admin_client):
    perpetual_license = licensing_factories.PerpetualLicenseFactory()

    history = admin_client.get(admin_url(PerpetualLicense, "auditlog", perpetual_license.pk)).content.decode()

    assert perpetual_license.license_key not in history
    assert f"REPHLO-****-****-****-{perpetual_license.license_key[-4:]}" in history


@pytest.mark.django_db
def test_user_change_is_audited_without_the_password_hash(admin_client, admin_user):
    # given
    user = platform_factories.UserFactory(first_name="Ada")
    url = admin_url(User, "change", user.pk)
    data = {
        "username": user.username,
        "email": user.email,
        "first_name": "Grace",
        "is_active": "on",
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
    }

    # when
    response = admin_client.post(url, data)

    # then
    assert response.status_code == 302
    row = AdminAuditLog.objects.get(action=AuditAction.UPDATE)
    assert (row.actor, row.resource_type, row.resource_id) == (admin_user, "auth.user", str(user.pk))
    assert (row.previous_value["first_name"], row.new_value["first_name"]) == ("Ada", "Grace")
    assert row.previous_value["password"] == row.new_value["password"] == "[redacted]"
    assert user.password not in str(row.previous_value) + str(row.new_value)


@pytest.mark.django_db
def test_console_password_change_is_audited_in_its_transaction(admin_client):
    user = platform_factories.UserFactory()
    new_password = "a-new-and-long-passphrase"

    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {"usable_password": "true", "password1": new_password, "password2": new_password},
    )

    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password(new_password)
    row = AdminAuditLog.objects.get(action=AuditAction.UPDATE)
    assert (row.resource_type, row.resource_id) == ("auth.user", str(user.pk))
    assert row.new_value == {"password": "[redacted]", "has_usable_password": True}
    assert new_password not in str(row.request_body)


@pytest.mark.django_db
def test_user_search_finds_by_email(admin_client):
    user = platform_factories.UserFactory(email="someone@example.org", username="someone")

    response = admin_client.get(admin_url(User, "changelist"), {"q": "someone@example"})

    assert list(response.context["cl"].result_list) == [user]


def test_deleting_a_user_in_the_console_is_the_gdpr_erasure(admin_client, admin_user, django_user_model):
    from subscriptions.services import account_register, tier_catalog_seed

    tier_catalog_seed()
    customer = account_register(email="leaving@example.com", password="a long enough passphrase")
    url = reverse("admin:auth_user_delete", args=[customer.pk])

    confirm_page = admin_client.get(url)
    response = admin_client.post(url, {"post": "yes"})

    assert confirm_page.status_code == 200
    assert response.status_code == 302
    assert not django_user_model.objects.filter(pk=customer.pk).exists()
    row = AdminAuditLog.objects.get(action="delete", resource_id=str(customer.pk))
    assert row.actor == admin_user
    assert "leaving@example.com" not in str(row.previous_value)


def test_a_superuser_cannot_be_deleted_in_the_console(admin_client, django_user_model):
    other_root = django_user_model.objects.create_superuser(username="root2@example.com", email="root2@example.com")

    response = admin_client.post(reverse("admin:auth_user_delete", args=[other_root.pk]), {"post": "yes"})

    assert response.status_code == 403
    assert django_user_model.objects.filter(pk=other_root.pk).exists()
