"""The console's customer page: what support reads about one customer, found from the user list,
the user's page and the index's search box, and the actions taken from it (each through its
service, audited, and refused without its permission)."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.db import connection, transaction
from django.test import TestCase
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import AdminAuditLog, AuditAction
from audit.tests.factories import AdminAuditLogFactory
from billing_project.customer_selectors import AUDIT_ROWS, RECENT_ROWS
from billing_project.tests.factories import UserFactory
from conftest import role_grant
from coupons.tests.factories import CouponRedemptionFactory
from credits.models import CreditAllocation, UserCreditBalance
from credits.services import credit_grant_by_staff
from credits.tests.factories import (
    CreditConsumptionFactory,
    CreditHoldFactory,
    TokenUsageLedgerFactory,
    UserCreditSourceFactory,
)
from licensing.models import LicenseStatus
from licensing.tests.factories import LicenseActivationFactory, PerpetualLicenseFactory
from subscriptions.models import ProrationEvent, SubscriptionStatus
from subscriptions.services import subscription_status_change, tier_catalog_seed
from subscriptions.tests.factories import (
    BillingInvoiceFactory,
    PaymentTransactionFactory,
    ProrationEventFactory,
    SubscriptionFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(db):
    tier_catalog_seed()


@pytest.fixture
def console(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def support_console(client, django_user_model):
    member = django_user_model.objects.create_user(
        username="help@example.com", email="help@example.com", password="correct horse battery", is_staff=True
    )
    client.force_login(role_grant(member, "support"))
    return client


def customer_with_history(*, rows: int = 1):
    """A Pro customer with `rows` of every kind of history the page shows."""
    customer = UserFactory(email="jane@example.com", username="jane@example.com", first_name="Jane")
    now = timezone.now()
    subscription = SubscriptionFactory(
        user=customer, current_period_start=now - timedelta(days=10), current_period_end=now + timedelta(days=20)
    )
    UserCreditBalance.objects.create(user=customer, amount=5_000 * rows)
    for _ in range(rows):
        grant = UserCreditSourceFactory(user=customer, original_amount=5_000)
        usage = TokenUsageLedgerFactory(user=customer, subscription_id=subscription.pk)
        CreditConsumptionFactory(deduction=usage.deduction, source=grant)
        CreditHoldFactory(user=customer, amount=300)
        LicenseActivationFactory(license=PerpetualLicenseFactory(user=customer))
        CouponRedemptionFactory(user=customer, subscription=subscription)
        invoice = BillingInvoiceFactory(user=customer, subscription=subscription)
        PaymentTransactionFactory(user=customer, invoice=invoice)
        ProrationEventFactory(user=customer, subscription=subscription)
    return customer, subscription


def page_url(user) -> str:
    return reverse("admin:auth_user_customer", args=[user.pk])


def test_the_customer_page_shows_profile_subscription_credits_usage_licenses_coupons_invoices_and_audit(console):
    customer, subscription = customer_with_history()
    subscription_status_change(
        subscription_id=subscription.pk, status=SubscriptionStatus.PAST_DUE, reason="Card expired", actor=None
    )
    credit_grant_by_staff(user=customer, amount=700, reason="Outage goodwill")

    response = console.get(page_url(customer))

    assert response.status_code == 200
    page = response.context["page"]
    assert page.tier == "pro" and page.subscription == subscription
    assert page.balance == 5_700
    assert page.held == 300 and page.available == 5_400
    assert {grant.remaining for grant in page.grants} == {5_000, 700}
    body = response.content.decode()
    assert "Jane" in body and "jane@example.com" in body
    assert "status active → past_due" in body and "Card expired" in body
    assert "upgrade pro → pro_max" in body and "net charge USD 10.00" in body
    assert "gpt-4o" in body and "0.01875" in body and "from admin_grant grant" in body
    assert (
        "Test laptop" in body and PerpetualLicenseFactory._meta.model.objects.get(user=customer).license_key not in body
    )
    assert "15.20" in body  # the redemption's paid amount
    assert "Outage goodwill" in body  # the grant's audit row and its reason
    assert 'id="customer-audit"' in body


def test_the_customer_page_reads_in_the_same_number_of_queries_whatever_the_history(console):
    few, _ = customer_with_history(rows=1)
    with CaptureQueriesContext(connection) as one_row_each:
        assert console.get(page_url(few)).status_code == 200
    many = UserFactory(email="many@example.com", username="many@example.com")
    _copy_history_to(many, rows=4)
    with CaptureQueriesContext(connection) as four_rows_each:
        assert console.get(page_url(many)).status_code == 200

    assert len(four_rows_each) == len(one_row_each)
    assert len(one_row_each) <= 30, [query["sql"] for query in one_row_each]


def test_older_rows_are_reached_from_the_customer_page_through_the_lists_filtered_to_the_customer(console):
    customer, _ = customer_with_history(rows=RECENT_ROWS + 1)
    someone_else = UserFactory()
    TokenUsageLedgerFactory(user=someone_else)

    response = console.get(page_url(customer))

    page = response.context["page"]
    assert len(page.usage) == len(page.redemptions) == len(page.invoices) == len(page.payments) == RECENT_ROWS
    body = response.content.decode()
    for section, changelist in (
        ("usage", "admin:credits_tokenusageledger_changelist"),
        ("redemptions", "admin:coupons_couponredemption_changelist"),
        ("invoices", "admin:subscriptions_billinginvoice_changelist"),
        ("payments", "admin:subscriptions_paymenttransaction_changelist"),
    ):
        link = f"{reverse(changelist)}?user__id__exact={customer.pk}"
        assert f'id="older-{section}"' in body and link in body
        listed = console.get(link).context["cl"]
        assert listed.result_count == RECENT_ROWS + 1
        assert {row.user_id for row in listed.result_list} == {customer.pk}


def test_a_customer_with_few_rows_has_no_older_links_and_one_audit_page(console):
    customer, _ = customer_with_history(rows=2)

    body = console.get(page_url(customer)).content.decode()

    assert "customer-older" not in body


def test_the_customer_page_pages_through_the_audit_rows_newest_first(console):
    customer = UserFactory(email="busy@example.com", username="busy@example.com")
    rows = [AdminAuditLogFactory(actor=customer, resource_id=str(number)) for number in range(AUDIT_ROWS + 5)]
    newest_first = [str(row.pk) for row in reversed(rows)]

    first = console.get(page_url(customer))
    second = console.get(page_url(customer), {"audit_page": 2})
    beyond = console.get(page_url(customer), {"audit_page": "x"})

    assert [str(row.pk) for row in first.context["page"].audit_rows] == newest_first[:AUDIT_ROWS]
    assert 'id="audit-older"' in first.content.decode() and 'id="audit-newer"' not in first.content.decode()
    assert [str(row.pk) for row in second.context["page"].audit_rows] == newest_first[AUDIT_ROWS:]
    assert 'id="audit-newer"' in second.content.decode() and 'id="audit-older"' not in second.content.decode()
    assert beyond.context["page"].audit_page == 1


def _copy_history_to(customer, *, rows: int):
    subscription = SubscriptionFactory(user=customer)
    UserCreditBalance.objects.create(user=customer, amount=5_000 * rows)
    for _ in range(rows):
        grant = UserCreditSourceFactory(user=customer, original_amount=5_000)
        usage = TokenUsageLedgerFactory(user=customer, subscription_id=subscription.pk)
        CreditConsumptionFactory(deduction=usage.deduction, source=grant)
        CreditHoldFactory(user=customer)
        LicenseActivationFactory(license=PerpetualLicenseFactory(user=customer))
        CouponRedemptionFactory(user=customer, subscription=subscription)
        PaymentTransactionFactory(
            user=customer, invoice=BillingInvoiceFactory(user=customer, subscription=subscription)
        )
        ProrationEventFactory(user=customer, subscription=subscription)
        credit_grant_by_staff(user=customer, amount=10, reason="audit row")


def test_the_user_list_the_user_page_and_the_index_lead_to_the_customer_page(console):
    customer = UserFactory(email="jane@example.com", username="jane@example.com")
    UserFactory(email="janet@example.com", username="janet@example.com")

    assert page_url(customer) in console.get(reverse("admin:auth_user_changelist")).content.decode()
    assert page_url(customer) in console.get(reverse("admin:auth_user_change", args=[customer.pk])).content.decode()
    assert reverse("admin:auth_user_customer_search") in console.get(reverse("admin:index")).content.decode()
    search = reverse("admin:auth_user_customer_search")
    one = console.get(search, {"q": "jane@example"})
    assert one.status_code == 302 and one["Location"] == page_url(customer)
    several = console.get(search, {"q": "jan"})
    assert several.status_code == 200 and "janet@example.com" in several.content.decode()
    assert console.get(search, {"q": str(customer.pk)})["Location"] == page_url(customer)


def test_staff_who_may_not_open_the_customer_page_are_not_offered_links_to_it(client, django_user_model):
    member = django_user_model.objects.create_user(
        username="accounts@example.com", email="accounts@example.com", password="correct horse battery", is_staff=True
    )
    member.user_permissions.set(
        Permission.objects.filter(codename__in=("view_user", "change_user", "view_adminauditlog"))
    )
    client.force_login(member)
    customer = UserFactory(email="jane@example.com", username="jane@example.com")
    with transaction.atomic():
        credit_grant_by_staff(user=customer, amount=10, reason="an audit row about jane")

    pages = [
        reverse("admin:auth_user_changelist"),
        reverse("admin:auth_user_change", args=[customer.pk]),
        reverse("admin:index"),
        reverse("admin:audit_adminauditlog_changelist"),
    ]
    bodies = [client.get(url) for url in pages]

    assert [response.status_code for response in bodies] == [200] * 4
    for body in (response.content.decode() for response in bodies):
        assert page_url(customer) not in body
        assert reverse("admin:auth_user_customer_search") not in body
    assert f"user {customer.pk}" in bodies[3].content.decode()
    assert client.get(page_url(customer)).status_code == 403


def test_staff_grant_credits_from_the_customer_page_with_an_expiry_and_it_is_audited(console, staff_user):
    customer, _ = customer_with_history()
    expires = timezone.localtime() + timedelta(days=30)

    response = console.post(
        reverse("admin:auth_user_customer_grant", args=[customer.pk]),
        {
            "amount": "2500",
            "source": "admin_grant",
            "expires_at_0": expires.strftime("%Y-%m-%d"),
            "expires_at_1": "12:00:00",
            "reason": "Goodwill",
        },
        follow=True,
    )

    assert response.status_code == 200
    assert "Granted 2500 credits" in response.content.decode()
    allocation = CreditAllocation.objects.get(user=customer, reason="Goodwill")
    assert allocation.amount == 2500 and allocation.granted_by == staff_user
    assert timezone.localtime(allocation.expires_at).date() == expires.date()
    row = AdminAuditLog.objects.get(action=AuditAction.GRANT)
    assert row.actor == staff_user and row.new_value["user_id"] == customer.pk


def test_a_tier_change_is_previewed_without_writing_then_applied_through_the_service(console, catalog, staff_user):
    customer, subscription = customer_with_history()
    ProrationEvent.objects.all().delete()
    url = reverse("admin:auth_user_customer_tier_change", args=[customer.pk, subscription.pk])

    preview = console.get(url, {"tier": "pro_max"})

    assert preview.status_code == 200
    quote = preview.context["quote"]
    assert quote.change_type == "upgrade" and quote.numbers.net_charge_usd > 0
    assert f"USD {quote.numbers.net_charge_usd}" in preview.content.decode()
    assert not ProrationEvent.objects.exists()

    applied = console.post(url, {"tier": "pro_max"}, follow=True)

    assert "Tier change to pro_max" in applied.content.decode()
    subscription.refresh_from_db()
    assert subscription.tier == "pro_max"
    event = ProrationEvent.objects.get(subscription=subscription)
    assert event.net_charge_usd == quote.numbers.net_charge_usd
    assert AdminAuditLog.objects.filter(resource_id=str(subscription.pk), actor=staff_user).exists()


def test_a_refused_tier_change_shows_the_reason_and_changes_nothing(console, catalog):
    customer, subscription = customer_with_history()
    url = reverse("admin:auth_user_customer_tier_change", args=[customer.pk, subscription.pk])

    response = console.post(url, {"tier": "pro"}, follow=True)

    assert "Refused: The subscription is already on this tier." in response.content.decode()
    assert ProrationEvent.objects.filter(subscription=subscription).count() == 1  # the fixture's own


def test_staff_cancel_a_subscription_now_from_the_customer_page(console, catalog, staff_user):
    customer, subscription = customer_with_history()

    console.post(
        reverse("admin:auth_user_customer_cancel", args=[customer.pk, subscription.pk]),
        {"reason": "Asked by phone", "immediately": "on"},
    )

    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.CANCELLED
    row = AdminAuditLog.objects.get(action=AuditAction.TRANSITION, resource_id=str(subscription.pk))
    assert row.actor == staff_user and row.new_value["reason"] == "Asked by phone"


def test_staff_suspend_a_license_and_resend_a_trial_reminder_from_the_customer_page(console, catalog):
    customer = UserFactory(email="trial@example.com", username="trial@example.com")
    license_ = PerpetualLicenseFactory(user=customer)
    trial = SubscriptionFactory(
        user=customer, status=SubscriptionStatus.TRIAL, trial_ends_at=timezone.now() + timedelta(days=3)
    )

    console.post(
        reverse("admin:auth_user_customer_license_suspend", args=[customer.pk, license_.pk]), {"reason": "Chargeback"}
    )
    with TestCase.captureOnCommitCallbacks(execute=True):  # the reminder's e-mail goes after commit
        console.post(reverse("admin:auth_user_customer_trial_reminder", args=[customer.pk, trial.pk]))

    license_.refresh_from_db()
    assert license_.status == LicenseStatus.SUSPENDED and license_.status_reason == "Chargeback"
    assert AdminAuditLog.objects.filter(action=AuditAction.SUSPEND, resource_id=str(license_.pk)).exists()
    assert [message.to for message in mail.outbox] == [["trial@example.com"]]
    assert AdminAuditLog.objects.filter(action=AuditAction.PROCESS, resource_id=str(trial.pk)).exists()


def test_support_reads_the_page_but_is_refused_the_money_and_subscription_actions(support_console):
    customer, subscription = customer_with_history()
    balance = UserCreditBalance.objects.get(user=customer).amount

    page = support_console.get(page_url(customer))
    grant = support_console.post(
        reverse("admin:auth_user_customer_grant", args=[customer.pk]),
        {"amount": "100", "source": "admin_grant", "reason": "no"},
    )
    cancel = support_console.post(
        reverse("admin:auth_user_customer_cancel", args=[customer.pk, subscription.pk]),
        {"reason": "no", "immediately": "on"},
    )
    preview = support_console.get(
        reverse("admin:auth_user_customer_tier_change", args=[customer.pk, subscription.pk]), {"tier": "pro_max"}
    )

    assert page.status_code == 200
    body = page.content.decode()
    assert 'id="grant-form"' not in body and 'id="cancel-form"' not in body
    assert 'id="customer-audit"' not in body  # support does not read the audit trail
    assert (grant.status_code, cancel.status_code, preview.status_code) == (403, 403, 403)
    assert UserCreditBalance.objects.get(user=customer).amount == balance
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.ACTIVE


def test_staff_without_the_read_permissions_are_refused_the_page(client, django_user_model):
    bare = django_user_model.objects.create_user(username="bare@example.com", password="x", is_staff=True)
    client.force_login(bare)
    customer = UserFactory()

    assert client.get(page_url(customer)).status_code == 403
    assert client.get(reverse("admin:auth_user_customer_search"), {"q": "a"}).status_code == 403
