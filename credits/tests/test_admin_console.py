"""Console actions: grant credits, reverse a deduction, approve/reject a pricing change; vendor prices."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.utils import timezone

from audit.models import AdminAuditLog
from credits.models import (
    CreditAllocation,
    CreditDeductionLedger,
    MarginAuditLog,
    ModelProviderPricing,
    PricingConfig,
    UserCreditBalance,
)
from credits.selectors import pricing_book
from credits.tests.conftest import fund, usage_event
from credits.tests.factories import ModelProviderPricingFactory, PricingConfigFactory, ProviderFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]


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


def test_set_budget_action_sets_a_hard_monthly_budget_audited_and_usage_beyond_it_is_refused(
    console, service_client, user
):
    fund(user, 1_000)
    balance = UserCreditBalance.objects.get(user=user)
    selection = {"action": "set_budget", ACTION_CHECKBOX_NAME: [balance.pk]}

    form_page = console.post("/admin/credits/usercreditbalance/", selection)
    done = console.post(
        "/admin/credits/usercreditbalance/", {**selection, "apply": "1", "monthly_credits": "100", "hard_limit": "on"}
    )

    assert form_page.status_code == 200 and b'name="monthly_credits"' in form_page.content
    assert done.status_code == 302
    balance.refresh_from_db()
    assert (balance.budget_monthly_credits, balance.budget_hard_limit) == (100, True)
    row = AdminAuditLog.objects.get(action="update", resource_type="credits.usercreditbalance")
    assert (row.actor, row.new_value["monthly_credits"], row.new_value["hard_limit"]) == (console.admin, 100, True)
    first = service_client.post("/api/v1/usage/record/", usage_event(user), format="json")  # 70 credits
    second = service_client.post("/api/v1/usage/record/", usage_event(user), format="json")
    assert first.status_code == 201
    assert (second.status_code, second.json()["code"]) == (402, "budget_exceeded")


def test_set_budget_action_refuses_a_hard_limit_without_a_budget_and_changes_nothing(console, user):
    fund(user, 1_000)
    balance = UserCreditBalance.objects.get(user=user)

    response = console.post(
        "/admin/credits/usercreditbalance/",
        {"action": "set_budget", ACTION_CHECKBOX_NAME: [balance.pk], "apply": "1", "hard_limit": "on"},
    )

    assert response.status_code == 200
    assert b"A hard limit needs a monthly budget." in response.content
    balance.refresh_from_db()
    assert (balance.budget_monthly_credits, balance.budget_hard_limit) == (None, False)
    assert not AdminAuditLog.objects.filter(resource_type="credits.usercreditbalance").exists()


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


def test_the_approval_page_shows_scope_margins_and_start_and_the_message_says_approved(console, staff_user):
    config = PricingConfigFactory(
        created_by=staff_user,
        previous_multiplier=Decimal("1.5000"),
        margin_multiplier=Decimal("1.8000"),
        effective_from=timezone.now() + timedelta(days=2),
    )
    selection = {"action": "approve_pricing_changes", ACTION_CHECKBOX_NAME: [config.pk]}

    page = console.post("/admin/credits/pricingconfig/", selection)
    done = console.post("/admin/credits/pricingconfig/", {**selection, "apply": "1"}, follow=True)

    shown = page.content.decode()
    start = f"{timezone.localtime(config.effective_from):%Y-%m-%d %H:%M}"
    assert "Tier pro: margin x1.5000 -&gt; x1.8000, effective " + start in shown
    (message,) = [str(message) for message in done.context["messages"]]
    assert message.startswith("approved Tier pro: margin x1.5000 -> x1.8000")
    assert "pending" not in message


def test_the_grant_form_takes_the_expiry_from_date_and_time_widgets(console, user):
    selection = {"action": "grant_credits", ACTION_CHECKBOX_NAME: [user.pk]}
    expires = timezone.localtime() + timedelta(days=10)

    form_page = console.post("/admin/auth/user/", selection)
    console.post(
        "/admin/auth/user/",
        {
            **selection,
            "apply": "1",
            "amount": "300",
            "reason": "support",
            "source": "admin_grant",
            "expires_at_0": f"{expires:%Y-%m-%d}",
            "expires_at_1": "18:30:00",
        },
    )

    assert b'class="vDateField"' in form_page.content and b'class="vTimeField"' in form_page.content
    assert b"admin/js/calendar.js" in form_page.content
    allocation = CreditAllocation.objects.get(user=user)
    assert f"{timezone.localtime(allocation.expires_at):%Y-%m-%d %H:%M}" == f"{expires:%Y-%m-%d} 18:30"


def test_reject_action_records_the_reason(console, staff_user):
    config = PricingConfigFactory(created_by=staff_user)

    console.post(
        "/admin/credits/pricingconfig/",
        {"action": "reject_changes", ACTION_CHECKBOX_NAME: [config.pk], "apply": "1", "reason": "not now"},
    )

    config.refresh_from_db()
    assert config.approval_status == "rejected"
    assert config.audit_entries.get(change_type="rejected").reason == "not now"


def _price_form(provider, *, starts, **fields) -> dict:
    return {
        "provider": provider.pk,
        "model_name": "house-model",
        "region": "",
        "vendor_model_id": "",
        "input_price_per_1k": "0.002",
        "output_price_per_1k": "0.008",
        "context_tiers": "[]",
        "service_tiers": "{}",
        "request_fees": "{}",
        "effective_from_0": starts.strftime("%Y-%m-%d"),
        "effective_from_1": starts.strftime("%H:%M:%S"),
        "description": "vendor list price",
        **fields,
    }


def test_a_price_added_in_the_console_ends_the_one_in_force_and_is_logged(console):
    provider = ProviderFactory()
    old = ModelProviderPricingFactory(provider=provider, model_name="house-model")
    starts = timezone.now().replace(microsecond=0) + timedelta(minutes=5)

    response = console.post("/admin/credits/modelproviderpricing/add/", _price_form(provider, starts=starts))

    assert response.status_code == 302
    new = ModelProviderPricing.objects.exclude(pk=old.pk).get(provider=provider)
    assert (new.input_price_per_1k, new.effective_from, new.previous_price_input) == (
        Decimal("0.002"),
        starts,
        old.input_price_per_1k,
    )
    old.refresh_from_db()
    assert old.effective_until == starts
    assert MarginAuditLog.objects.filter(scope__model_price_id=str(new.pk)).count() == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"service_tiers": '{"batch": {"prices": {"input": "ten"}}}'},
        {"context_tiers": '[{"above_tokens": "many"}]'},
        {"request_fees": '{"web_search": -1}'},
    ],
    ids=["service tier price", "context tier", "request fee"],
)
def test_a_malformed_price_is_refused_by_the_console_and_the_price_book_still_loads(console, fields):
    provider = ProviderFactory()
    starts = timezone.now() + timedelta(minutes=5)

    response = console.post("/admin/credits/modelproviderpricing/add/", _price_form(provider, starts=starts, **fields))

    assert response.status_code == 200
    assert b"errorlist" in response.content
    assert not ModelProviderPricing.objects.filter(provider=provider).exists()
    assert pricing_book() is not None


def test_a_price_starting_before_the_latest_is_refused_by_the_console(console):
    provider = ProviderFactory()
    ModelProviderPricingFactory(provider=provider, model_name="house-model")

    response = console.post(
        "/admin/credits/modelproviderpricing/add/",
        _price_form(provider, starts=timezone.now() - timedelta(days=3)),
    )

    assert response.status_code == 200
    assert b"must start after its latest price" in response.content
    assert ModelProviderPricing.objects.filter(provider=provider).count() == 1


def test_a_price_in_the_history_is_never_edited_in_the_console_only_retired(console):
    price = ModelProviderPricingFactory(provider=ProviderFactory())
    url = f"/admin/credits/modelproviderpricing/{price.pk}/change/"

    response = console.post(url, {"input_price_per_1k": "0.000001", "description": "retired", "is_active": ""})

    assert response.status_code == 302
    price.refresh_from_db()
    assert (price.input_price_per_1k, price.is_active, price.description) == (Decimal("0.005"), False, "retired")


def test_a_balance_page_shows_its_history_as_links_to_its_ledger_rows(console, user, other_user, service_client):
    fund(user, 1000)
    fund(other_user, 1000)
    for owner in (user, other_user):
        service_client.post("/api/v1/usage/record/", usage_event(owner), format="json")
    balance = UserCreditBalance.objects.get(user=user)

    page = console.get(f"/admin/credits/usercreditbalance/{balance.pk}/change/")

    assert page.status_code == 200
    deductions = f"/admin/credits/creditdeductionledger/?user__exact={user.pk}"
    assert deductions.replace("&", "&amp;") in page.content.decode()
    listed = console.get(deductions)
    assert listed.status_code == 200
    assert [row.user_id for row in listed.context["cl"].result_list] == [user.pk]
