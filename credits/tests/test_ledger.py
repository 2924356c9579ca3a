"""Reversal, expiry, reconciliation and rollups, through the API and the ops commands."""

from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from audit.models import AdminAuditLog
from credits.models import (
    CreditDeductionLedger,
    CreditUsageDailySummary,
    TokenUsageDailySummary,
    TokenUsageLedger,
    UserCreditBalance,
    UserCreditSource,
)
from credits.services.ledger import ledger_dangling_references
from credits.tests.conftest import fund, usage_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]

RECORD = "/api/v1/usage/record/"


def reverse_url(deduction) -> str:
    return f"/api/v1/admin/credits/deductions/{deduction.pk}/reverse/"


def verify(*args) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("verify_ledger", "--no-progress", *args, stdout=out, stderr=out)
    except SystemExit as exit_:
        return exit_.code, out.getvalue()
    return 0, out.getvalue()


def test_reversal_restores_the_credits_as_a_new_grant_and_is_audited(service_client, staff_client, user):
    fund(user, 100)
    service_client.post(RECORD, usage_event(user), format="json")
    deduction = CreditDeductionLedger.objects.get()

    response = staff_client.post(reverse_url(deduction), {"reason": "model returned garbage"}, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["amount"], body["balance_after"]) == (70, 100)
    reversal = CreditDeductionLedger.objects.get(pk=body["reversal_id"])
    assert (reversal.reason, reversal.reverses_id, reversal.balance_before, reversal.balance_after) == (
        "reversal",
        deduction.pk,
        30,
        100,
    )
    grant = UserCreditSource.objects.get(pk=body["grant_id"])
    assert (grant.source, grant.remaining, grant.reversal_of_id) == ("reversal", 70, deduction.pk)
    row = AdminAuditLog.objects.get(action="reverse")
    assert (row.resource_id, row.new_value["reason"]) == (str(deduction.pk), "model returned garbage")
    assert verify() == (0, "Ledger consistent for 1 users.\n")


def test_a_deduction_is_reversed_at_most_once(service_client, staff_client, user):
    fund(user, 100)
    service_client.post(RECORD, usage_event(user), format="json")
    deduction = CreditDeductionLedger.objects.get()
    staff_client.post(reverse_url(deduction), {"reason": "refund"}, format="json")

    again = staff_client.post(reverse_url(deduction), {"reason": "refund"}, format="json")

    assert again.status_code == 409
    assert again.json()["code"] == "already_reversed"
    assert UserCreditBalance.objects.get(user=user).amount == 100


def test_reversal_needs_a_reason(service_client, staff_client, user):
    fund(user, 100)
    service_client.post(RECORD, usage_event(user), format="json")

    response = staff_client.post(reverse_url(CreditDeductionLedger.objects.get()), {}, format="json")

    assert response.status_code == 400
    assert "reason" in response.json()["errors"]
    assert CreditDeductionLedger.objects.count() == 1


def test_reversal_is_staff_only(service_client, user_client, user):
    fund(user, 100)
    service_client.post(RECORD, usage_event(user), format="json")

    response = user_client.post(reverse_url(CreditDeductionLedger.objects.get()), {"reason": "x"}, format="json")

    assert response.status_code == 403


def test_expire_credits_writes_an_expiration_row_per_grant_and_lowers_the_balance(user):
    soon = timezone.now() + timedelta(hours=1)
    fund(user, 300, expires_at=soon)
    fund(user, 200, expires_at=soon)
    fund(user, 50)

    with time_machine.travel(soon + timedelta(seconds=1)):
        out = StringIO()
        call_command("expire_credits", "--no-progress", stdout=out)
        call_command("expire_credits", "--no-progress", stdout=StringIO())  # nothing left to do

    assert "Expired 2 grants of 1 users." in out.getvalue()
    expirations = CreditDeductionLedger.objects.filter(reason="expiration").order_by("balance_before")
    assert [(row.amount, row.balance_before, row.balance_after) for row in expirations] == [
        (200, 250, 50),
        (300, 550, 250),
    ]
    assert UserCreditBalance.objects.get(user=user).amount == 50
    assert all(grant.expired_at for grant in UserCreditSource.objects.filter(expires_at=soon))
    assert verify()[0] == 0


def test_expire_credits_closes_grants_spent_before_their_expiry_without_a_ledger_row(service_client, user):
    soon = timezone.now() + timedelta(hours=1)
    spent = UserCreditSource.objects.get(allocation=fund(user, 50, expires_at=soon).allocation)
    fund(user, 1000)
    response = service_client.post(RECORD, usage_event(user), format="json")  # 70 credits, soonest-expiring first
    assert response.status_code == 201, response.content
    left = UserCreditSource.objects.get(allocation=fund(user, 30, expires_at=soon).allocation)

    with time_machine.travel(soon + timedelta(seconds=1)):
        dry, out, again = StringIO(), StringIO(), StringIO()
        call_command("expire_credits", "--dry-run", stdout=dry)
        call_command("expire_credits", "--no-progress", stdout=out)
        call_command("expire_credits", "--no-progress", stdout=again)

    assert "Would expire grants of 1 users. Would close 1 spent before expiry." in dry.getvalue()
    assert "Expired 1 grants of 1 users. Closed 1 spent before expiry." in out.getvalue()
    assert "Expired 0 grants of 0 users. Closed 0 spent before expiry." in again.getvalue()
    spent.refresh_from_db()
    left.refresh_from_db()
    assert (spent.remaining, spent.expired_at is not None) == (0, True)
    assert (left.remaining, left.expired_at is not None) == (0, True)
    assert list(CreditDeductionLedger.objects.filter(reason="expiration").values_list("amount", flat=True)) == [30]
    assert UserCreditBalance.objects.get(user=user).amount == 980
    assert verify()[0] == 0


def test_no_index_of_the_grants_reads_remaining_so_a_debit_updates_its_grant_in_place():
    """A change of an indexed column (or of one an index's condition reads) is not a HOT update: it
    would write an entry into every index of the table at each debit."""
    table = UserCreditSource._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass", [table])
        else:
            cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = %s", [table])
        definitions = [row[0] or "" for row in cursor.fetchall()]

    assert len(definitions) >= 4
    assert [definition for definition in definitions if "remaining" in definition] == []


def test_verify_ledger_finds_and_fix_repairs_a_corrupted_balance(service_client, user, other_user):
    fund(user, 1000)
    fund(other_user, 500)
    service_client.post(RECORD, usage_event(user), format="json")
    UserCreditBalance.objects.filter(user=user).update(amount=5000)  # corrupted on purpose

    code, report = verify()
    assert code == 1
    assert f"user {user.pk}: balance 5000 != ledger 930" in report
    assert f"user {other_user.pk}" not in report

    code, report = verify("--fix")
    assert code == 0, report
    assert "Repaired 1 users" in report
    assert UserCreditBalance.objects.get(user=user).amount == 930
    repair = AdminAuditLog.objects.get(action="repair")
    assert (repair.previous_value["balance"], repair.new_value["balance"]) == (5000, 930)
    assert verify() == (0, "Ledger consistent for 2 users.\n")


def test_verify_ledger_repairs_a_grant_whose_remainder_disagrees_with_its_lineage(service_client, user):
    fund(user, 1000)
    service_client.post(RECORD, usage_event(user), format="json")
    UserCreditSource.objects.filter(user=user).update(remaining=999)

    code, report = verify("--user", str(user.pk))
    assert code == 1
    assert "remaining 999 != 930 by its consumptions" in report

    assert verify("--user", str(user.pk), "--fix")[0] == 0
    assert UserCreditSource.objects.get(user=user).remaining == 930


def test_verify_ledger_counts_lineage_rows_whose_grant_was_deleted_behind_the_orm(service_client, user):
    """A lineage row's grant is a reference the database does not check (credits.models): a grant
    deleted by hand in SQL leaves the row naming nothing, and verify_ledger says so."""
    fund(user, 1000)
    service_client.post(RECORD, usage_event(user), format="json")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM credits_usercreditsource")

    code, report = verify()

    assert code == 1
    assert "creditconsumption.source: 1 rows name a row that does not exist" in report
    assert "creditconsumption.deduction" not in report
    assert set(ledger_dangling_references()) == {
        "tokenusageledger.user",
        "tokenusageledger.deduction",
        "tokenusageledger.provider",
        "tokenusageledger.pricing",
        "creditdeductionledger.user",
        "creditconsumption.deduction",
        "creditconsumption.source",
    }


def test_deleting_a_user_deletes_their_ledger_rows_and_leaves_none_naming_them(service_client, user, other_user):
    fund(user, 1000)
    fund(other_user, 500)
    for owner in (user, other_user):
        service_client.post(RECORD, usage_event(owner), format="json")

    user.delete()

    assert not CreditDeductionLedger.objects.filter(user_id=user.pk).exists()
    assert not TokenUsageLedger.objects.filter(user_id=user.pk).exists()
    assert CreditDeductionLedger.objects.filter(user=other_user).count() == 1
    assert verify() == (0, "Ledger consistent for 1 users.\n")


def test_rollup_usage_rebuilds_the_daily_summaries_idempotently(service_client, user):
    fund(user, 1000)
    for _ in range(3):
        service_client.post(RECORD, usage_event(user), format="json")
    today = timezone.now().date().isoformat()

    for _ in range(2):
        call_command("rollup_usage", "--from", today, "--to", today, "--no-progress", stdout=StringIO())

    tokens = TokenUsageDailySummary.objects.get()
    assert (tokens.total_requests, tokens.total_credits_deducted, tokens.total_input_tokens) == (3, 210, 3000)
    assert tokens.success_rate == 100
    credits = CreditUsageDailySummary.objects.get()
    assert (credits.total_deductions, credits.total_requests, credits.total_credits_granted) == (210, 3, 1000)


def test_rollup_usage_dry_run_keeps_nothing(service_client, user):
    fund(user, 1000)
    service_client.post(RECORD, usage_event(user), format="json")
    today = timezone.now().date().isoformat()

    call_command("rollup_usage", "--from", today, "--dry-run", "--no-progress", stdout=StringIO())

    assert TokenUsageDailySummary.objects.count() == 0


def test_the_database_refuses_a_second_reversal_of_one_deduction(service_client, staff_client, user):
    fund(user, 100)
    service_client.post(RECORD, usage_event(user), format="json")
    deduction = CreditDeductionLedger.objects.get()
    staff_client.post(reverse_url(deduction), {"reason": "refund"}, format="json")

    # PostgreSQL names the constraint, SQLite its column.
    with pytest.raises(IntegrityError, match="deduction_reversed_once|reverses_id"), transaction.atomic():
        CreditDeductionLedger.objects.create(
            user=user, amount=70, balance_before=100, balance_after=170, reason="reversal", reverses=deduction
        )

    assert CreditDeductionLedger.objects.filter(reverses=deduction).count() == 1


def test_ledger_rows_get_keys_in_the_order_they_were_written(service_client, user):
    fund(user, 1_000)
    for _ in range(3):
        service_client.post(RECORD, usage_event(user), format="json")

    deductions = list(CreditDeductionLedger.objects.order_by("created_at"))

    assert [row.id.version for row in deductions] == [7, 7, 7]
    assert [row.id for row in deductions] == sorted(row.id for row in deductions)
    # The key begins with its row's creation time in milliseconds (RFC 9562).
    assert all(abs((row.id.int >> 80) - row.created_at.timestamp() * 1000) < 1_000 for row in deductions)
