"""The audit chain as production runs it (AUDIT_SEAL_ON_WRITE off): rows written unsealed by the
services, sealed afterwards by the sealer, on real PostgreSQL with real threads."""

import threading
from datetime import timedelta
from io import StringIO
from unittest import mock
from uuid import UUID

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, connections, transaction
from django.http import HttpResponse
from django.test.utils import CaptureQueriesContext

from audit.context import RequestAudit, audit_status_expected, current_request_audit
from audit.middleware import AuditContextMiddleware
from audit.models import AdminAuditLog, AuditChainHead
from audit.selectors import audit_chain_verify
from audit.services import STATUS_FILL_TRANSACTION, audit_chain_seal, audit_record, audit_rows_answered
from conftest import run_concurrently

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _sealed_by_the_sealer(settings):
    settings.AUDIT_SEAL_ON_WRITE = False


def _write(staff_user, count: int, prefix: str = "r") -> list[AdminAuditLog]:
    return [
        audit_record(action="update", resource_type="probe", resource_id=f"{prefix}{i}", actor=staff_user)
        for i in range(count)
    ]


def _verify(*options) -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit_chain", "--no-progress", *options, stdout=out, stderr=err)
    except SystemExit as exit_:
        return exit_.code, err.getvalue()
    return 0, out.getvalue()


def _sealed_sequences() -> list[int]:
    return sorted(AdminAuditLog.objects.values_list("sequence", flat=True))


def _tamper(sql: str, params: list) -> None:
    """Changes sealed rows behind the application's back (triggers off, as a superuser could)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, [str(p) if isinstance(p, UUID) else p for p in params])


def test_a_row_is_written_unsealed_while_the_sealer_holds_the_chain_head(staff_user):
    holding, release = threading.Event(), threading.Event()

    def sealer_holding_the_head(_):
        with transaction.atomic():
            AuditChainHead.objects.select_for_update().get_or_create(chain="admin_audit")
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=lambda: (sealer_holding_the_head(None), connections.close_all()))
    holder.start()
    try:
        assert holding.wait(10)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '1s'")  # a writer that waited for the head would fail
            row = audit_record(action="update", resource_type="probe", actor=staff_user)
    finally:
        release.set()
        holder.join()

    row.refresh_from_db()
    assert (row.sequence, row.prev_hash, row.row_hash, row.status_code) == (None, "", "", 200)
    assert row.position == "unsealed"
    assert audit_chain_seal().sealed == 1
    row.refresh_from_db()
    assert row.position == "#1" and row.row_hash == row.compute_hash()


def test_concurrent_sealers_and_writers_make_one_chain_with_every_row_once(staff_user):
    _write(staff_user, 30, prefix="before")

    def work(index):
        if index % 2:
            return audit_chain_seal(batch_size=4).sealed
        return len(_write(staff_user, 10, prefix=f"w{index}-"))

    results = run_concurrently(work, list(range(8)))
    assert all(not isinstance(result, Exception) for result in results), results
    audit_chain_seal()

    assert AdminAuditLog.objects.count() == 70
    assert _sealed_sequences() == list(range(1, 71))
    assert audit_chain_verify() is None
    assert AuditChainHead.objects.get().sequence == 70


def test_a_sealer_that_fails_midway_leaves_its_batch_unsealed_and_the_next_run_completes_the_chain(staff_user):
    _write(staff_user, 10)
    real_hash, calls = AdminAuditLog.compute_hash, []

    def failing_on_the_fifth(row):
        calls.append(row.pk)
        if len(calls) == 5:
            raise RuntimeError("sealer stopped")
        return real_hash(row)

    with mock.patch.object(AdminAuditLog, "compute_hash", failing_on_the_fifth), pytest.raises(RuntimeError):
        audit_chain_seal(batch_size=3)

    # The first batch (3 rows) committed; the second rolled back whole, the rest was never reached.
    assert AdminAuditLog.objects.filter(sequence__isnull=False).count() == 3
    assert AuditChainHead.objects.get().sequence == 3
    assert audit_chain_verify() is None
    assert audit_chain_seal().sealed == 7
    assert _sealed_sequences() == list(range(1, 11))
    assert audit_chain_verify() is None


def test_a_sealer_whose_connection_is_killed_midway_forks_nothing(staff_user):
    _write(staff_user, 6)
    real_hash = AdminAuditLog.compute_hash
    midway, killed = threading.Event(), threading.Event()
    backend = {}

    def pausing_midway(row):
        if not midway.is_set():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend["pid"] = cursor.fetchone()[0]
            midway.set()
            killed.wait(10)
        return real_hash(row)

    def sealer(_):
        with mock.patch.object(AdminAuditLog, "compute_hash", pausing_midway):
            return audit_chain_seal()

    outcome = []
    thread = threading.Thread(target=lambda: outcome.extend(run_concurrently(sealer, [None])))
    thread.start()
    assert midway.wait(10)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend["pid"]])
    killed.set()
    thread.join()

    assert isinstance(outcome[0], DatabaseError)
    assert AdminAuditLog.objects.filter(sequence__isnull=False).count() == 0
    assert audit_chain_seal().sealed == 6
    assert _sealed_sequences() == list(range(1, 7))
    assert audit_chain_verify() is None


def test_a_row_committed_after_newer_rows_were_sealed_is_sealed_once_after_them(staff_user):
    written, commit = threading.Event(), threading.Event()
    late = {}

    def long_transaction(_):
        with transaction.atomic():
            late["row"] = audit_record(action="update", resource_type="probe", resource_id="late", actor=staff_user)
            written.set()
            commit.wait(10)

    thread = threading.Thread(target=lambda: run_concurrently(long_transaction, [None]))
    thread.start()
    assert written.wait(10)
    newer = _write(staff_user, 2, prefix="newer")
    assert audit_chain_seal().sealed == 2  # the late row is not committed yet: not visible, not sealed
    commit.set()
    thread.join()
    assert audit_chain_seal().sealed == 1
    assert audit_chain_seal().sealed == 0

    late_row = AdminAuditLog.objects.get(pk=late["row"].pk)
    assert late_row.created_at < min(row.created_at for row in newer)
    assert late_row.sequence == 3
    assert [AdminAuditLog.objects.get(pk=row.pk).sequence for row in newer] == [1, 2]
    assert _verify() == (0, "Sealed 0 rows.\nAudit chain intact: 3 sealed rows.\n")


@pytest.mark.parametrize(
    ("tampering", "reported"),
    [
        ("edit", "content was changed"),
        ("delete", "missing"),
        ("reorder", "does not link"),
        ("delete_newest", "newest rows are missing"),
        ("unseal", "missing"),
    ],
)
def test_a_sealed_row_changed_through_sql_is_detected(staff_user, tampering, reported):
    rows = _write(staff_user, 4)
    audit_chain_seal()
    rows = list(AdminAuditLog.objects.order_by("sequence"))

    if tampering == "edit":
        _tamper("UPDATE audit_adminauditlog SET status_code = 201 WHERE id = %s", [rows[2].id])
    elif tampering == "delete":
        _tamper("DELETE FROM audit_adminauditlog WHERE id = %s", [rows[1].id])
    elif tampering == "reorder":
        _tamper("UPDATE audit_adminauditlog SET sequence = -1 WHERE id = %s", [rows[1].id])
        _tamper("UPDATE audit_adminauditlog SET sequence = %s WHERE id = %s", [rows[1].sequence, rows[2].id])
        _tamper("UPDATE audit_adminauditlog SET sequence = %s WHERE id = %s", [rows[2].sequence, rows[1].id])
    elif tampering == "delete_newest":
        _tamper("DELETE FROM audit_adminauditlog WHERE id = %s", [rows[-1].id])
    else:  # made to look unsealed, so that the sealer would seal it again elsewhere
        _tamper(
            "UPDATE audit_adminauditlog SET sequence = NULL, prev_hash = '', row_hash = '' WHERE id = %s",
            [rows[1].id],
        )

    code, message = _verify()
    assert code == 1
    assert "Audit chain broken" in message and reported in message


def test_the_database_refuses_changes_to_a_sealed_row_and_all_but_the_seal_and_status_of_an_unsealed_one(
    staff_user,
):
    (sealed,) = _write(staff_user, 1)
    audit_chain_seal()
    (unsealed,) = _write(staff_user, 1, prefix="open")
    refused = [
        ("UPDATE audit_adminauditlog SET status_code = 500 WHERE id = %s", sealed.id),
        ("UPDATE audit_adminauditlog SET sequence = NULL WHERE id = %s", sealed.id),
        ("UPDATE audit_adminauditlog SET error_message = 'x' WHERE id = %s", unsealed.id),
        ("DELETE FROM audit_adminauditlog WHERE id = %s", unsealed.id),
    ]
    for sql, row_id in refused:
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [str(row_id)])

    assert AdminAuditLog.objects.filter(pk=sealed.pk).unsealed_update(status_code=500) == 0
    # An unsealed row's status may be corrected (written with the answer its request expected to give).
    assert AdminAuditLog.objects.filter(pk=unsealed.pk).unsealed_update(status_code=502) == 1
    assert audit_chain_seal().sealed == 1
    assert audit_chain_verify() is None


def _columns() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_adminauditlog' ORDER BY 1"
        )
        return [name for (name,) in cursor.fetchall()]


def _change_refused(column: str, row_id, donor_id) -> bool:
    """Whether the database refuses to give the row the donor row's value of `column`."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f'UPDATE audit_adminauditlog SET "{column}" = (SELECT "{column}" FROM audit_adminauditlog '
                f"WHERE id = %s) WHERE id = %s",
                [str(donor_id), str(row_id)],
            )
    except DatabaseError as error:
        assert "append-only: update refused" in str(error)
        return True
    return False


def test_every_column_of_a_sealed_row_and_all_but_the_seal_and_status_of_an_unsealed_one_are_refused(
    staff_user, other_user
):
    """Column by column, with every column the table has now: a column added to the table and not to
    the guard (audit migration 0009) fails here."""
    (sealed,) = _write(staff_user, 1)
    donor = AdminAuditLog.objects.create(
        actor=other_user,
        actor_email="donor@example.com",
        action="grant",
        resource_type="donor",
        resource_id="d1",
        endpoint="/donor/",
        method="PUT",
        ip_address="10.9.9.9",
        user_agent="donor-agent",
        request_body={"donor": 1},
        previous_value={"donor": 2},
        new_value={"donor": 3},
        status_code=418,
        error_message="donor",
        timestamp=sealed.timestamp - timedelta(days=1),
    )
    audit_chain_seal()
    (unsealed,) = _write(staff_user, 1, prefix="open")
    columns = _columns()
    with connection.cursor() as cursor:
        for column in columns:
            cursor.execute(
                f'SELECT bool_and(a."{column}" IS DISTINCT FROM d."{column}") FROM audit_adminauditlog a, '
                f"audit_adminauditlog d WHERE a.id IN (%s, %s) AND d.id = %s",
                [str(sealed.id), str(unsealed.id), str(donor.id)],
            )
            assert cursor.fetchone()[0], f"the donor row must differ from both rows in {column}"

    assert [column for column in columns if not _change_refused(column, sealed.id, donor.id)] == []
    seal_and_status = {"sequence", "prev_hash", "row_hash", "status_code"}
    refused_unsealed = [column for column in columns if column not in seal_and_status]
    assert [column for column in refused_unsealed if not _change_refused(column, unsealed.id, donor.id)] == []


def test_a_sealed_row_lets_its_actor_go_and_takes_nothing_else_with_it(staff_user):
    """A deleted user (GDPR) leaves the rows without their actor; actor_email keeps who it was."""
    (sealed,) = _write(staff_user, 1)
    audit_chain_seal()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_adminauditlog SET actor_id = NULL WHERE id = %s", [str(sealed.id)])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_adminauditlog SET actor_id = NULL, actor_email = '' WHERE id = %s", [str(sealed.id)]
        )

    row = AdminAuditLog.objects.get(pk=sealed.pk)
    assert (row.actor_id, row.actor_email) == (None, staff_user.email)
    assert audit_chain_verify() is None


def test_verify_reports_rows_left_unsealed_longer_than_the_threshold(staff_user, settings):
    _write(staff_user, 3)
    settings.AUDIT_UNSEALED_ALERT_SECONDS = 0

    code, message = _verify("--no-seal")

    assert code == 1
    assert "3 audit rows left unsealed longer than 0:00:00" in message
    assert _verify()[0] == 0  # sealing them is what the sealer is for


PROVIDER = {"name": "mistral", "api_type": "mistral"}


def _awaiting_status(staff_user, rf) -> AdminAuditLog:
    """A row written while its request is being answered: no status yet."""
    token = current_request_audit.set(RequestAudit(request=rf.post("/api/v1/admin/probe/")))
    try:
        return audit_record(action="update", resource_type="probe", actor=staff_user)
    finally:
        current_request_audit.reset(token)


def test_the_status_a_client_got_is_written_after_commit_in_one_round_trip(staff_client):
    with CaptureQueriesContext(connection) as queries:
        created = staff_client.post("/api/v1/admin/providers/", PROVIDER, format="json")

    assert created.status_code == 201
    row = AdminAuditLog.objects.get(action="create", resource_type="credits.provider")
    assert (row.status_code, row.sequence) == (201, None)
    (fill,) = [query["sql"] for query in queries if "synchronous_commit" in query["sql"]]
    assert fill.lstrip().startswith("BEGIN;") and fill.rstrip().endswith("COMMIT;")
    assert audit_chain_seal().sealed == 1
    row.refresh_from_db()
    assert (row.status_code, row.row_hash) == (201, row.compute_hash())


def test_a_status_write_that_fails_midway_ends_its_transaction_and_the_connection_goes_on(staff_user, rf):
    row = _awaiting_status(staff_user, rf)
    failing = STATUS_FILL_TRANSACTION.replace("{update};", "{update}; SELECT 1 / 0;")

    with mock.patch("audit.services.STATUS_FILL_TRANSACTION", failing), pytest.raises(DatabaseError):
        audit_rows_answered(row_ids=[row.pk], status_code=200)

    assert connection.get_autocommit() and not connection.in_atomic_block
    assert audit_rows_answered(row_ids=[row.pk], status_code=200) == 1
    row.refresh_from_db()
    assert row.status_code == 200


def _served_expecting(rf, staff_user, *, answered: int, sealed_meanwhile: bool = False):
    """A request whose view expects to answer 200 once its service committed, and answers `answered`."""

    def view(request):
        audit_status_expected(200)
        with transaction.atomic():
            audit_record(action="process", resource_type="probe", actor=staff_user)
        if sealed_meanwhile:
            audit_chain_seal()
        return HttpResponse(status=answered)

    return AuditContextMiddleware(view)(rf.post("/api/v1/webhooks/stripe/"))


def test_rows_written_with_the_expected_answer_need_no_second_transaction(staff_user, rf):
    with CaptureQueriesContext(connection) as queries:
        assert _served_expecting(rf, staff_user, answered=200).status_code == 200

    row = AdminAuditLog.objects.get(resource_type="probe")
    assert (row.status_code, row.sequence) == (200, None)
    assert not [query for query in queries if "UPDATE" in query["sql"]]
    assert audit_chain_seal().sealed == 1


def test_rows_written_with_the_expected_answer_take_the_one_the_client_got_instead(staff_user, rf):
    assert _served_expecting(rf, staff_user, answered=502).status_code == 502

    row = AdminAuditLog.objects.get(resource_type="probe")
    assert (row.status_code, row.sequence) == (502, None)
    assert audit_chain_seal().sealed == 1
    assert audit_chain_verify() is None


def test_a_row_sealed_before_its_answer_differed_keeps_its_seal_and_the_log_says_so(staff_user, rf, caplog):
    _served_expecting(rf, staff_user, answered=500, sealed_meanwhile=True)

    row = AdminAuditLog.objects.get(resource_type="probe")
    assert (row.status_code, row.sequence) == (200, 1)
    assert f"audit row {row.pk} sealed with status 200; the client got 500" in caplog.text
    assert audit_chain_verify() is None
