"""Console actions: grant credits, reverse a deduction, approve/reject a pricing change."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from audit.models import AdminAuditLog
from credits.models import CreditDeductionLedger, PricingConfig, UserCreditBalance
from credits.tests.conftest import fund, usage_event
from credits.tests.factories import PricingConfigFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]


@pytest.fixture
def console(client, django_user_model):
    admin = django_user_model.objects.create_superuser(
        username="root@example.com", email="root@example.com", password="pw"
    )
    client.force_login(admin)
    client.admin = admin
    return client


def test_grant_credits_action_on_users_asks_for_the_amount_then_grants(console, user):
    url = "/admin/auth/user/"
    selection = {"action": "grant_credits", ACTION_CHECKBOX_NAME: [user.pk]}

    form_page = console.post(url, selection)
    done = console.post(url, {**selection, "apply": "1", "amount": "300", "reason": "support", "source": "admin_grant"})

    assert form_page.status_code == 200
    assert b"Grant credits" in form_page.content and b'name="amount"' in form_page.content
    assert done.status_code == 302
    assert UserCreditBalance.objects.get(user=user).amount == 300
    row = AdminAuditLog.objects.get(action="grant")
    assert (row.actor, row.new_value["amount"]) == (console.admin, 300)


def test_grant_credits_action_with_an_invalid_amount_shows_the_form_again(console, user):
    selection = {"action": "grant_credits", ACTION_CHECKBOX_NAME: [user.pk]}

    response = console.post(
        "/admin/auth/user/", {**selection, "apply": "1", "amount": "0", "reason": "x", "source": "admin_grant"}
    )

    assert response.status_code == 200
    assert b"errorlist" in response.content
    assert not UserCreditBalance.objects.filter(user=user, amount__gt=0).exists()


def test_reverse_action_restores_the_credits(console, service_client, user):
    fund(user, 100)
    service_client.post("/api/v1/usage/record/", usage_event(user), format="json")
    deduction = CreditDeductionLedger.objects.get()

    response = console.post(
        "/admin/credits/creditdeductionledger/",
        {"action": "reverse_deductions", ACTION_CHECKBOX_NAME: [deduction.pk], "apply": "1", "reason": "bad answer"},
    )

    assert response.status_code == 302
    assert UserCreditBalance.objects.get(user=user).amount == 100
    assert CreditDeductionLedger.objects.get(reverses=deduction).reversal_reason == "bad answer"


def test_approve_action_refuses_ones_own_change_and_approves_anothers(console, staff_user):
    own = PricingConfigFactory(created_by=console.admin)
    other = PricingConfigFactory(created_by=staff_user)

    response = console.post(
        "/admin/credits/pricingconfig/",
        {"action": "approve_pricing_changes", ACTION_CHECKBOX_NAME: [own.pk, other.pk], "apply": "1"},
    )

    assert response.status_code == 302
    statuses = dict(PricingConfig.objects.values_list("pk", "approval_status"))
    assert (statuses[own.pk], statuses[other.pk]) == ("pending", "approved")


def test_reject_action_records_the_reason(console, staff_user):
    config = PricingConfigFactory(created_by=staff_user)

    console.post(
        "/admin/credits/pricingconfig/",
        {"action": "reject_changes", ACTION_CHECKBOX_NAME: [config.pk], "apply": "1", "reason": "not now"},
    )

    config.refresh_from_db()
    assert config.approval_status == "rejected"
    assert config.audit_entries.get(change_type="rejected").reason == "not now"
