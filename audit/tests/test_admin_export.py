"""CSV export of the console's lists: the file holds exactly the rows the filtered list shows, every
export is audited, and a staff member who may not view a list cannot export it."""

import csv
import io

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from audit.admin_export import CsvExportMixin
from audit.models import AdminAuditLog, AuditAction
from audit.tests.factories import AdminAuditLogFactory
from billing_project.tests.factories import UserFactory
from billing_project.tests.test_authorization_walk import staff_member
from coupons.tests.factories import CouponRedemptionFactory
from credits.tests.factories import (
    CreditAllocationFactory,
    CreditConsumptionFactory,
    CreditDeductionLedgerFactory,
    TokenUsageLedgerFactory,
    UserCreditSourceFactory,
)
from payments.models import PaymentOperation
from payments.services.operations import operation_open
from payments.services.refunds import payment_record
from subscriptions.tests.factories import BillingInvoiceFactory, PaymentTransactionFactory

pytestmark = pytest.mark.django_db


def console(identity: str) -> Client:
    client = Client()
    client.force_login(staff_member(identity))
    return client


def export_url(label: str) -> str:
    app_label, model_name = label.split(".")
    return f"/admin/{app_label}/{model_name}/export/"


def csv_ids(response) -> set[str]:
    return {row["id"] for row in csv.DictReader(io.StringIO(response.content.decode()))}


def exports(identity: str, label: str, query: dict):
    return console(identity).get(export_url(label), query)


def test_an_export_of_the_filtered_redemptions_is_those_rows_as_csv_and_is_audited():
    # given: two successful redemptions and one failed one
    CouponRedemptionFactory.create_batch(2)
    failed = CouponRedemptionFactory(status="failed", failure_reason="coupon_expired")
    support = console("support")
    changelist = support.get("/admin/coupons/couponredemption/", {"status": "failed"})

    # when: the list's Export link, which carries its filter, is followed
    assert 'href="/admin/coupons/couponredemption/export/?status=failed"' in changelist.content.decode()
    response = support.get("/admin/coupons/couponredemption/export/", {"status": "failed"})

    # then: a CSV file of the failed redemption only, and an audit row saying who exported what
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    assert csv_ids(response) == {str(failed.pk)}
    row = AdminAuditLog.objects.get(action=AuditAction.EXPORT)
    assert row.actor_email == "support@example.com"
    assert row.resource_type == "coupons.couponredemption"
    assert row.new_value == {"format": "csv", "filters": {"status": "failed"}, "rows": 1}


def _rows_of_two_kinds(label: str):
    """Rows of the list, some matching the filter and some not; returns the filter."""
    if label == "coupons.couponredemption":
        CouponRedemptionFactory()
        CouponRedemptionFactory(status="failed", failure_reason="coupon_expired")
        return {"status": "failed"}
    if label == "subscriptions.billinginvoice":
        BillingInvoiceFactory()
        BillingInvoiceFactory(status="paid", amount_paid_usd="19.00")
        return {"status": "paid"}
    if label == "subscriptions.paymenttransaction":
        PaymentTransactionFactory()
        PaymentTransactionFactory(status="failed", completed_at=None)
        return {"status": "failed"}
    if label == "credits.creditallocation":
        CreditAllocationFactory()
        CreditAllocationFactory(source="bonus")
        return {"source": "bonus"}
    if label == "credits.usercreditsource":
        UserCreditSourceFactory()
        UserCreditSourceFactory(source="bonus")
        return {"source": "bonus"}
    if label == "credits.creditdeductionledger":
        CreditDeductionLedgerFactory(reversal=True)
        return {"reason": "reversal"}
    if label == "credits.creditconsumption":
        first = CreditConsumptionFactory()
        CreditConsumptionFactory()
        return {"q": str(first.deduction.request_id)}
    if label == "credits.tokenusageledger":
        TokenUsageLedgerFactory()
        TokenUsageLedgerFactory(request_type="embedding")
        return {"request_type": "embedding"}
    if label == "audit.adminauditlog":
        AdminAuditLogFactory()
        AdminAuditLogFactory(action=AuditAction.CREATE)
        return {"action": "create"}
    if label == "payments.paymentoperation":
        for invoice in BillingInvoiceFactory.create_batch(2):
            operation_open(kind="upgrade_charge", user=invoice.user, subject=invoice, amount_usd="5.00")
        PaymentOperation.objects.filter(pk=PaymentOperation.objects.first().pk).update(state="failed")
        return {"state": "failed"}
    if label == "payments.payment":
        for currency, charge in (("usd", "ch_usd"), ("eur", "ch_eur")):
            payment_record(
                kind="license_checkout",
                user=UserFactory(),
                amount=1900,
                currency=currency,
                provider="stripe",
                stripe_charge_id=charge,
            )
        return {"currency": "eur"}
    raise AssertionError(f"no rows for {label}: add them here")


EXPORTED_LISTS = sorted(
    model._meta.label_lower
    for model, model_admin in admin.site._registry.items()
    if isinstance(model_admin, CsvExportMixin)
)


def test_every_list_staff_filter_by_money_or_audit_has_an_export():
    assert set(EXPORTED_LISTS) >= {
        "coupons.couponredemption",
        "subscriptions.billinginvoice",
        "subscriptions.paymenttransaction",
        "payments.paymentoperation",
        "credits.creditallocation",
        "credits.usercreditsource",
        "credits.creditdeductionledger",
        "credits.tokenusageledger",
        "audit.adminauditlog",
    }


@pytest.mark.parametrize("label", EXPORTED_LISTS)
def test_each_export_holds_exactly_the_rows_its_filter_selects(label):
    query = _rows_of_two_kinds(label)
    model = apps.get_model(label)
    lookups = {"q": "deduction__request_id"}
    expected = {
        str(pk)
        for pk in model._default_manager.filter(
            **{lookups.get(key, key): value for key, value in query.items()}
        ).values_list("pk", flat=True)
    }

    response = exports("admin", label, query)

    assert response.status_code == 200
    assert csv_ids(response) == expected
    assert model._default_manager.count() > len(expected)
    assert AdminAuditLog.objects.get(action=AuditAction.EXPORT).new_value["rows"] == len(expected)


EXPORTED_WITH_A_CUSTOMER = [
    label for label in EXPORTED_LISTS if any(field.name == "user" for field in apps.get_model(label)._meta.fields)
]


@pytest.mark.parametrize("label", EXPORTED_WITH_A_CUSTOMER)
def test_each_export_names_the_customer_by_e_mail_beside_the_id(label):
    _rows_of_two_kinds(label)
    model = apps.get_model(label)
    emails = {str(pk): email or "" for pk, email in model._default_manager.values_list("pk", "user__email")}

    with CaptureQueriesContext(connection) as queries:
        response = exports("admin", label, {})

    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == len(emails) >= 2
    assert all(row["user_email"] == emails[row["id"]] for row in rows)
    assert any(row["user"] and row["user_email"] for row in rows)
    # The e-mails come with the rows (one join), not with a query per row.
    customers = {f'"auth_user"."id" = {row["user"]} ' for row in rows if row["user"]}
    assert not [query for query in queries if any(customer in query["sql"] for customer in customers)]


def test_the_audit_export_keeps_the_actor_e_mail_it_recorded():
    AdminAuditLogFactory()

    response = exports("admin", "audit.adminauditlog", {})

    header = next(csv.reader(io.StringIO(response.content.decode())))
    assert header.count("actor_email") == 1 and "actor" in header


@pytest.mark.parametrize(
    ("identity", "label"),
    [
        ("no permission", "coupons.couponredemption"),
        ("no permission", "subscriptions.billinginvoice"),
        ("support", "audit.adminauditlog"),
    ],
)
def test_a_staff_member_without_the_view_permission_cannot_export(identity, label):
    response = exports(identity, label, {})

    assert response.status_code == 403
    assert not AdminAuditLog.objects.filter(action=AuditAction.EXPORT).exists()
