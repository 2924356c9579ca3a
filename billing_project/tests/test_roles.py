"""Staff roles: the groups the migration makes, and the console walked page by page and action by
action for every role against a table of expected answers. (The staff API's walk is in
test_authorization_walk.py.)"""

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.test import Client

from billing_project.roles import ALL_PERMISSIONS, FINANCE, ROLES, SUPPORT, permissions_of, roles_sync
from billing_project.tests.test_authorization_walk import ADMIN, IDENTITIES, _may, staff_member
from conftest import access_token_for, bearer
from credits.models import CreditDeductionLedger, UserCreditBalance
from credits.tests.factories import CreditDeductionLedgerFactory
from subscriptions.services import account_register, tier_catalog_seed

pytestmark = pytest.mark.django_db

S, F, A = "support", "finance", "admin"


def _group_permissions(role: str) -> set[str]:
    return {
        f"{app_label}.{codename}"
        for app_label, codename in Group.objects.get(name=role).permissions.values_list(
            "content_type__app_label", "codename"
        )
    }


def test_the_migration_made_each_role_with_the_permissions_of_its_table():
    assert _group_permissions("support") == permissions_of(SUPPORT)
    assert _group_permissions("finance") == permissions_of(FINANCE)
    assert ROLES["admin"] == ALL_PERMISSIONS
    assert Group.objects.get(name="admin").permissions.count() == Permission.objects.count()


def test_applying_the_roles_again_adds_what_is_missing_and_keeps_console_edits():
    support = Group.objects.get(name="support")
    extra = Permission.objects.get(content_type__app_label="credits", codename="view_pricingconfig")
    support.permissions.add(extra)
    support.permissions.remove(Permission.objects.get(content_type__app_label="auth", codename="view_user"))

    roles_sync(apps=apps)

    assert _group_permissions("support") == permissions_of(SUPPORT) | {"credits.view_pricingconfig"}


def test_roles_nest_support_within_finance():
    assert permissions_of(SUPPORT) <= permissions_of(FINANCE)


# Regression (issue 20): a staff account with no permission at all granted 1,000,000 credits,
# exported another user's personal data, created coupons and read the revenue figures.
def test_staff_without_permissions_can_grant_export_create_or_read_revenue_nothing(api_client, django_user_model):
    tier_catalog_seed()
    customer = account_register(email="customer@example.com", password="correct horse battery staple")
    bare_staff = django_user_model.objects.create_user(username="bare", email="bare@example.com", is_staff=True)
    headers = bearer(access_token_for(bare_staff))
    balance_before = UserCreditBalance.objects.get(user=customer).amount

    grant = api_client.post(
        "/api/v1/admin/credits/grant/",
        {"user_id": customer.pk, "amount": 1_000_000, "reason": "free money"},
        format="json",
        **headers,
    )
    export = api_client.get(f"/api/v1/admin/users/{customer.pk}/", **headers)
    coupon = api_client.post(
        "/api/v1/admin/coupons/",
        {"code": "FREE", "coupon_type": "fixed_amount_discount", "discount_type": "credits", "discount_value": "5000"},
        format="json",
        **headers,
    )
    revenue = api_client.get(
        "/api/v1/admin/analytics/coupon-performance/", {"date_from": "2026-01-01", "date_to": "2026-01-31"}, **headers
    )
    console = Client()
    console.force_login(bare_staff)
    dashboard = console.get("/admin/dashboard/")

    assert [grant.status_code, export.status_code, coupon.status_code, revenue.status_code] == [403] * 4
    assert grant.json()["code"] == "permission_denied"
    assert "credits.grant_credits" in grant.json()["detail"]
    assert dashboard.status_code == 403
    assert UserCreditBalance.objects.get(user=customer).amount == balance_before
    assert not apps.get_model("coupons", "Coupon").objects.exists()


# The console: for each model, the least role that may open its list, and for each action the least
# role that is offered it (and so may run it: Django refuses an action it does not offer).
CONSOLE_LISTS = {
    "audit.adminauditlog": A,
    "audit.auditchainhead": A,
    "auditlog.logentry": S,
    "auth.group": A,
    "auth.user": S,
    "axes.accessattempt": A,
    "axes.accessfailurelog": A,
    "axes.accesslog": A,
    "billing_project.idempotencykey": A,
    "billing_project.revokedtokenfamily": A,
    "billing_project.servicetoken": A,
    "billing_project.staffsession": A,
    "billing_project.verifiedemail": S,
    "billing_project.notification": A,
    "billing_project.outboundevent": S,
    "billing_project.webhookdelivery": S,
    "billing_project.webhookendpoint": A,
    "coupons.campaigncoupon": S,
    "coupons.coupon": S,
    "coupons.couponanalyticssnapshot": F,
    "coupons.couponcodeguess": F,
    "coupons.couponcampaign": S,
    "coupons.couponfrauddetection": S,
    "coupons.couponredemption": S,
    "coupons.couponusagelimit": S,
    "coupons.couponvalidationrule": S,
    "credits.autorecharge": S,
    "credits.creditallocation": S,
    "credits.creditconsumption": S,
    "credits.creditdeductionledger": S,
    "credits.credithold": S,
    "credits.creditpack": S,
    "credits.creditusagedailysummary": S,
    "credits.marginauditlog": F,
    "credits.modelproviderpricing": S,
    "credits.pricingconfig": F,
    "credits.provider": S,
    "credits.tokenusagedailysummary": S,
    "credits.tokenusageledger": S,
    "credits.usercreditbalance": S,
    "credits.usercreditsource": S,
    "django_celery_beat.clockedschedule": A,
    "django_celery_beat.crontabschedule": A,
    "django_celery_beat.intervalschedule": A,
    "django_celery_beat.periodictask": A,
    "django_celery_beat.solarschedule": A,
    "django_celery_results.taskresult": A,
    "licensing.licenseactivation": S,
    "licensing.perpetuallicense": S,
    "licensing.versionupgrade": S,
    "otp_static.staticdevice": A,
    "otp_totp.totpdevice": A,
    "payments.paymentevent": F,
    "payments.paymentoperation": S,
    "payments.payment": S,
    "payments.stripecustomer": F,
    "payments.webhookevent": F,
    "subscriptions.billinginvoice": S,
    "subscriptions.dunningattempt": S,
    "subscriptions.paymenttransaction": S,
    "subscriptions.prorationevent": S,
    "subscriptions.subscription": S,
    "subscriptions.tierconfig": S,
    "subscriptions.userentitlement": S,
    "token_blacklist.blacklistedtoken": A,
    "token_blacklist.outstandingtoken": A,
}
CONSOLE_ACTIONS = {
    ("audit.auditchainhead", "seal_audit_chain"): A,
    ("auth.group", "delete_selected"): A,
    ("auth.user", "grant_credits"): F,
    ("auth.user", "export_personal_data"): A,
    ("axes.accessattempt", "cleanup_expired_attempts"): A,
    ("axes.accessattempt", "delete_selected"): A,
    ("axes.accessfailurelog", "delete_selected"): A,
    ("axes.accesslog", "delete_selected"): A,
    ("billing_project.servicetoken", "revoke_service_tokens"): A,
    ("billing_project.staffsession", "revoke_staff_sessions"): A,
    ("billing_project.webhookdelivery", "resend_deliveries"): A,
    ("billing_project.webhookendpoint", "disable_endpoints"): A,
    ("billing_project.webhookendpoint", "enable_endpoints"): A,
    ("coupons.campaigncoupon", "delete_selected"): F,
    ("coupons.coupon", "activate_coupons"): F,
    ("coupons.coupon", "deactivate_coupons"): F,
    ("coupons.coupon", "soft_delete_coupons"): F,
    ("coupons.couponcampaign", "generate_codes"): F,
    ("coupons.couponfrauddetection", "resolve_detections"): F,
    ("coupons.couponvalidationrule", "delete_selected"): F,
    ("credits.creditdeductionledger", "reverse_deductions"): F,
    ("credits.modelproviderpricing", "delete_selected"): A,
    ("credits.pricingconfig", "approve_pricing_changes"): F,
    ("credits.pricingconfig", "reject_changes"): F,
    ("credits.pricingconfig", "delete_selected"): A,
    ("credits.provider", "delete_selected"): A,
    ("credits.usercreditbalance", "grant_credits"): F,
    ("credits.usercreditbalance", "set_budget"): F,
    ("credits.autorecharge", "auto_recharge_turn_off"): F,
    ("credits.autorecharge", "auto_recharge_turn_on"): F,
    ("django_celery_beat.clockedschedule", "delete_selected"): A,
    ("django_celery_beat.crontabschedule", "delete_selected"): A,
    ("django_celery_beat.intervalschedule", "delete_selected"): A,
    ("django_celery_beat.periodictask", "run_tasks"): A,
    ("django_celery_beat.periodictask", "delete_selected"): A,
    ("django_celery_beat.solarschedule", "delete_selected"): A,
    ("licensing.licenseactivation", "delete_selected"): A,
    ("licensing.perpetuallicense", "suspend_licenses"): S,
    ("licensing.perpetuallicense", "reactivate_licenses"): S,
    ("licensing.perpetuallicense", "revoke_licenses"): S,
    ("licensing.perpetuallicense", "delete_selected"): A,
    ("licensing.versionupgrade", "delete_selected"): A,
    ("otp_static.staticdevice", "delete_selected"): A,
    ("otp_totp.totpdevice", "delete_selected"): A,
    ("payments.payment", "refund_payments"): F,
    ("payments.paymentoperation", "reconcile_operations"): F,
    ("payments.webhookevent", "replay_webhook_events"): F,
    ("subscriptions.billinginvoice", "delete_selected"): A,
    ("subscriptions.paymenttransaction", "delete_selected"): A,
    ("subscriptions.paymenttransaction", "refund_payments"): F,
    ("subscriptions.prorationevent", "delete_selected"): A,
    ("subscriptions.subscription", "change_subscription_status"): F,
    ("subscriptions.subscription", "resend_trial_reminder"): F,
    ("subscriptions.subscription", "delete_selected"): A,
    ("subscriptions.tierconfig", "delete_selected"): A,
    ("token_blacklist.blacklistedtoken", "delete_selected"): A,
    ("token_blacklist.outstandingtoken", "revoke_refresh_tokens"): A,
}
CONSOLE_PAGES = {"/admin/dashboard/": F}


def _changelist(model_label: str) -> str:
    app_label, model_name = model_label.split(".")
    return f"/admin/{app_label}/{model_name}/"


@pytest.fixture
def console_clients():
    clients = {}
    for identity in IDENTITIES:
        client = Client()
        client.force_login(staff_member(identity))
        clients[identity] = client
    return clients


def _offered_actions(response) -> set[str]:
    if response.status_code != 200 or response.context.get("action_form") is None:
        return set()
    return {name for name, _ in response.context["action_form"].fields["action"].choices if name}


def test_every_console_model_and_action_has_an_expected_answer(admin_client):
    registered = {model._meta.label_lower for model in admin.site._registry}
    offered = {
        (label, action) for label in registered for action in _offered_actions(admin_client.get(_changelist(label)))
    }

    assert registered == set(CONSOLE_LISTS)
    assert offered == set(CONSOLE_ACTIONS)


@pytest.mark.parametrize("model_label", sorted(CONSOLE_LISTS))
def test_console_list_and_actions_answer_each_role_as_the_table_says(console_clients, model_label):
    answers = {identity: console_clients[identity].get(_changelist(model_label)) for identity in IDENTITIES}
    actions = {action: role for (label, action), role in CONSOLE_ACTIONS.items() if label == model_label}

    for identity, answer in answers.items():
        may_list = _may(identity, CONSOLE_LISTS[model_label])
        assert answer.status_code == (200 if may_list else 403), (model_label, identity)
        expected_actions = {action for action, role in actions.items() if _may(identity, role)} if may_list else set()
        assert _offered_actions(answer) == expected_actions, (model_label, identity)


@pytest.mark.parametrize("page", sorted(CONSOLE_PAGES))
def test_console_pages_answer_each_role_as_the_table_says(console_clients, page):
    for identity in IDENTITIES:
        status = console_clients[identity].get(page).status_code
        assert status == (200 if _may(identity, CONSOLE_PAGES[page]) else 403), (page, identity)


def test_an_action_not_offered_to_a_role_is_refused_when_posted(console_clients):
    deduction = CreditDeductionLedgerFactory()

    response = console_clients["support"].post(
        _changelist("credits.creditdeductionledger"),
        {"action": "reverse_deductions", "_selected_action": [deduction.pk], "apply": "1", "reason": "because"},
        follow=True,
    )

    assert response.status_code == 200
    assert "Reverse the selected deductions" not in response.content.decode()
    assert list(CreditDeductionLedger.objects.all()) == [deduction]


def test_only_a_superuser_makes_a_superuser(console_clients):
    target = get_user_model().objects.create_user(username="target", email="target@example.com", is_staff=True)
    form = console_clients[ADMIN].get(f"/admin/auth/user/{target.pk}/change/").context["adminform"].form

    assert "is_superuser" not in form.fields


# Regression: hiding `is_superuser` was the only guard, so an admin could reset a superuser's
# password, or give them a second factor the admin knew, and sign in as them.
def test_an_admin_cannot_change_a_superuser_or_set_their_password(console_clients):
    superuser = get_user_model().objects.create_superuser(
        username="root", email="root@example.com", password="the original one"
    )

    change = console_clients[ADMIN].post(f"/admin/auth/user/{superuser.pk}/change/", {"email": "admin@example.com"})
    password = console_clients[ADMIN].post(
        f"/admin/auth/user/{superuser.pk}/password/",
        {"password1": "known to the admin 42", "password2": "known to the admin 42", "usable_password": "true"},
    )
    by_superuser = console_clients["superuser"].get(f"/admin/auth/user/{superuser.pk}/password/")

    assert (change.status_code, password.status_code, by_superuser.status_code) == (403, 403, 200)
    superuser.refresh_from_db()
    assert superuser.check_password("the original one")
    assert superuser.email == "root@example.com"


@pytest.mark.parametrize("device_model", ["otp_totp.totpdevice", "otp_static.staticdevice"])
def test_a_second_factor_is_never_added_or_edited_in_the_console_only_deleted(console_clients, device_model):
    target = get_user_model().objects.create_user(username="target", email="target@example.com", is_staff=True)
    app_label, model_name = device_model.split(".")
    model = apps.get_model(app_label, model_name)
    device = model.objects.create(user=target, name="phone", confirmed=True)
    superuser = console_clients["superuser"]

    add = superuser.post(f"/admin/{app_label}/{model_name}/add/", {"user": target.pk, "name": "mine"})
    edit = superuser.post(f"/admin/{app_label}/{model_name}/{device.pk}/change/", {"user": target.pk, "name": "x"})
    delete = superuser.post(f"/admin/{app_label}/{model_name}/{device.pk}/delete/", {"post": "yes"})

    assert (add.status_code, edit.status_code, delete.status_code) == (403, 403, 302)
    assert not model.objects.exists()
