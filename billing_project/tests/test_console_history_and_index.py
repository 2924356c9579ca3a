"""One history per object (field changes and audit rows together), the audit list's customer and
reason, and the console's index in sections by what staff do."""

import re

import pytest
from auditlog.models import LogEntry
from django.contrib import admin
from django.urls import reverse

from audit.models import AdminAuditLog, AuditAction
from billing_project.tests.factories import UserFactory
from conftest import role_grant
from credits.services import credit_grant_by_staff
from subscriptions.models import SubscriptionStatus
from subscriptions.services import subscription_status_change
from subscriptions.tests.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def console(client, staff_user):
    client.force_login(staff_user)
    return client


def history_of(client, obj):
    opts = obj._meta
    return client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_history", args=[obj.pk]))


def test_the_history_button_shows_field_changes_and_audit_rows_together_newest_first(console, staff_user):
    subscription = SubscriptionFactory(status=SubscriptionStatus.ACTIVE)
    subscription_status_change(
        subscription_id=subscription.pk, status=SubscriptionStatus.PAST_DUE, reason="Card expired", actor=staff_user
    )

    response = history_of(console, subscription)

    assert response.status_code == 200
    entries = response.context["entries"]
    assert [entry.at for entry in entries] == sorted((entry.at for entry in entries), reverse=True)
    audit_entries = [entry for entry in entries if entry.audit_row is not None]
    field_entries = [entry for entry in entries if entry.audit_row is None]
    assert [(entry.what, entry.detail, entry.who) for entry in audit_entries] == [
        ("Transition", "Card expired", "staff@example.com")
    ]
    assert any("status: active -> past_due" in entry.detail for entry in field_entries)
    assert any(entry.what == "row create" for entry in field_entries)
    body = response.content.decode()
    assert "Card expired" in body and "status: active -&gt; past_due" in body


def test_reverse_relations_are_neither_logged_nor_shown_as_noise(console):
    subscription = SubscriptionFactory(status=SubscriptionStatus.ACTIVE)
    # A row logged before reverse relations were left out of the log.
    noisy = LogEntry.objects.get_for_object(subscription).get()
    noisy.changes = {**noisy.changes_dict, "invoices": ["None", "subscriptions.BillingInvoice.None"]}
    noisy.save()

    response = history_of(console, subscription)

    body = response.content.decode()
    assert "status: None -&gt; active" in body
    assert "BillingInvoice.None" not in body and "invoices:" not in body


def test_django_auditlog_logs_a_rows_own_fields_only():
    subscription = SubscriptionFactory(status=SubscriptionStatus.ACTIVE)

    (entry,) = LogEntry.objects.get_for_object(subscription)

    assert "status" in entry.changes_dict
    assert not {"invoices", "payments", "dunning_attempts", "proration_events"} & set(entry.changes_dict)


def test_staff_without_the_audit_permission_see_the_field_changes_only(client, django_user_model, staff_user):
    member = django_user_model.objects.create_user(username="help@example.com", password="x", is_staff=True)
    client.force_login(role_grant(member, "support"))
    subscription = SubscriptionFactory(status=SubscriptionStatus.ACTIVE)
    subscription_status_change(
        subscription_id=subscription.pk, status=SubscriptionStatus.PAST_DUE, reason="Card expired", actor=staff_user
    )

    entries = history_of(client, subscription).context["entries"]

    assert entries and all(entry.audit_row is None for entry in entries)


def test_the_audit_list_shows_the_customer_each_row_is_about_and_the_reason(console, staff_user):
    customer = UserFactory()
    credit_grant_by_staff(user=customer, amount=10, reason="Outage goodwill", actor=staff_user)

    response = console.get(reverse("admin:audit_adminauditlog_changelist"), {"action__exact": AuditAction.GRANT})

    body = response.content.decode()
    customer_page = reverse("admin:auth_user_customer", args=[customer.pk])
    assert f'<a href="{customer_page}">user {customer.pk}</a>' in body
    assert "Outage goodwill" in body
    assert AdminAuditLog.objects.get(action=AuditAction.GRANT).new_value["user_id"] == customer.pk


def test_the_index_is_in_sections_by_what_staff_do_with_plural_names_right(admin_client):
    response = admin_client.get(reverse("admin:index"))

    sections = [section["name"] for section in response.context["app_list"]]
    assert sections == ["Customers", "Billing", "Credits", "Licensing", "Coupons", "Audit", "System"]
    by_section = {
        section["name"]: {entry["object_name"] for entry in section["models"]}
        for section in response.context["app_list"]
    }
    assert {"User", "VerifiedEmail", "UserEntitlement"} <= by_section["Customers"]
    assert {"Subscription", "BillingInvoice", "PaymentTransaction", "PaymentOperation"} <= by_section["Billing"]
    assert {"AdminAuditLog", "LogEntry"} <= by_section["Audit"]
    body = response.content.decode()
    assert "Token usage daily summaries" in body and "summarys" not in body


def test_every_console_table_is_named_in_a_proper_plural_in_its_breadcrumbs_and_title(admin_client):
    wrong = {
        model._meta.label: str(model._meta.verbose_name_plural)
        for model in admin.site._registry
        if re.search(r"[^aeiou]ys\b", str(model._meta.verbose_name_plural))
    }
    assert wrong == {}

    page = admin_client.get(reverse("admin:credits_creditusagedailysummary_changelist")).content.decode()
    assert "Credit usage daily summaries" in page and "summarys" not in page


def test_an_apps_own_page_still_lists_its_models(admin_client):
    response = admin_client.get(reverse("admin:app_list", args=["credits"]))

    assert response.status_code == 200
    (app,) = response.context["app_list"]
    assert app["app_label"] == "credits" and "Credit usage daily summaries" in response.content.decode()
