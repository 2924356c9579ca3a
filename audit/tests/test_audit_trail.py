from uuid import UUID

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection

from audit.models import AdminAuditLog, AppendOnlyError, AuditChainHead
from audit.services import audit_record
from audit.tests.factories import AuditChainHeadFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def target(django_user_model):
    return django_user_model.objects.create_user(username="target@example.com", email="target@example.com")


def test_an_admin_api_write_writes_its_audit_row(staff_client, staff_user, target):
    response = staff_client.delete(
        f"/api/v1/admin/users/{target.pk}/", HTTP_USER_AGENT="pytest-agent", REMOTE_ADDR="203.0.113.9"
    )

    assert response.status_code == 204
    row = AdminAuditLog.objects.get(action="delete")
    assert row.actor == staff_user
    assert row.actor_email == "staff@example.com"
    assert (row.resource_type, row.resource_id) == ("auth.user", str(target.pk))
    assert (row.endpoint, row.method, row.status_code) == (f"/api/v1/admin/users/{target.pk}/", "DELETE", 204)
    assert (row.ip_address, row.user_agent) == ("203.0.113.9", "pytest-agent")
    assert row.previous_value["id"] == target.pk
    assert "target@example.com" not in str(row.previous_value)  # the erased user's e-mail is not kept


def test_a_failed_admin_write_rolls_back_with_its_audit_row_and_is_logged_as_failed(staff_client, target, monkeypatch):
    def broken_delete(self, *args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(get_user_model(), "delete", broken_delete)

    response = staff_client.delete(f"/api/v1/admin/users/{target.pk}/")

    assert response.status_code == 500
    assert get_user_model().objects.filter(pk=target.pk).exists()
    rows = list(AdminAuditLog.objects.all())
    assert len(rows) == 1  # the success row rolled back with the change
    assert rows[0].status_code == 500
    assert rows[0].error_message == "RuntimeError: disk on fire"
    assert rows[0].method == "DELETE"


def test_a_refused_admin_write_is_logged_with_its_error(staff_client, staff_user):
    response = staff_client.delete(f"/api/v1/admin/users/{staff_user.pk}/")

    assert response.status_code == 409
    row = AdminAuditLog.objects.get()
    assert (row.status_code, row.action, row.resource_type) == (409, "delete", "users")
    assert row.error_message == "Staff cannot erase their own account."


def test_request_bodies_in_the_audit_are_redacted(staff_user, rf):
    request = rf.post(
        "/api/v1/admin/users/",
        data={"password": "hunter2", "license_key": "REPHLO-ABCD-EFGH-JKMN-PQR7", "note": "ok"},
        content_type="application/json",
    )
    request.user = staff_user

    row = audit_record(action="update", resource_type="probe", request=request)

    assert row.request_body == {"password": "[redacted]", "license_key": "REPHLO-****-****-****-PQR7", "note": "ok"}


def test_audit_log_viewer_filters_and_paginates(staff_client, staff_user):
    for index in range(3):
        audit_record(action="update", resource_type="coupons.coupon", resource_id=str(index), actor=staff_user)
    audit_record(action="approve", resource_type="credits.pricingconfig", resource_id="p", actor=staff_user)

    page = staff_client.get("/api/v1/admin/audit-logs/", {"resource_type": "coupons.coupon", "page_size": 2}).json()
    approvals = staff_client.get("/api/v1/admin/audit-logs/", {"action": "approve"}).json()

    assert page["count"] == 3
    assert [row["resource_id"] for row in page["results"]] == ["2", "1"]
    assert page["next"] is not None
    assert [row["resource_type"] for row in approvals["results"]] == ["credits.pricingconfig"]


def test_audit_log_viewer_has_no_write_route(staff_client, staff_user):
    row = audit_record(action="update", resource_type="probe", actor=staff_user)

    assert staff_client.post("/api/v1/admin/audit-logs/", {}, format="json").status_code == 405
    assert staff_client.delete(f"/api/v1/admin/audit-logs/{row.id}/").status_code == 405
    assert staff_client.patch(f"/api/v1/admin/audit-logs/{row.id}/", {}, format="json").status_code == 405


def test_audit_rows_cannot_be_changed_or_deleted_through_the_orm(staff_user):
    row = audit_record(action="update", resource_type="probe", actor=staff_user)

    with pytest.raises(AppendOnlyError):
        row.save()
    with pytest.raises(AppendOnlyError):
        row.delete()
    with pytest.raises(AppendOnlyError):
        AdminAuditLog.objects.filter(pk=row.pk).update(error_message="x")
    with pytest.raises(AppendOnlyError):
        AdminAuditLog.objects.all().delete()


@pytest.mark.postgres
def test_the_database_refuses_sql_edits_of_audit_rows(staff_user):
    from django.db import DatabaseError, transaction

    row = audit_record(action="update", resource_type="probe", actor=staff_user)

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_adminauditlog SET error_message = 'x' WHERE id = %s", [row.id])
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_adminauditlog WHERE id = %s", [row.id])


def test_deleting_the_actor_keeps_the_audit_row_and_its_chain(staff_user, capsys):
    row = audit_record(action="update", resource_type="probe", actor=staff_user)

    staff_user.delete()

    row = AdminAuditLog.objects.get(pk=row.pk)
    assert row.actor is None
    assert row.actor_email == "staff@example.com"
    call_command("verify_audit_chain")
    assert "intact" in capsys.readouterr().out


def _chain(staff_user, length=4):
    return [
        audit_record(action="update", resource_type="probe", resource_id=str(i), actor=staff_user)
        for i in range(length)
    ]


def _tamper(sql: str, params: list) -> None:
    """Changes audit rows behind the application's back, as someone with database access could."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")  # triggers off, like a superuser
        pk_field = AdminAuditLog._meta.pk
        cursor.execute(sql, [pk_field.get_db_prep_value(p, connection) if isinstance(p, UUID) else p for p in params])


def _verify() -> tuple[int, str]:
    from io import StringIO

    err = StringIO()
    try:
        call_command("verify_audit_chain", stderr=err, stdout=StringIO())
    except SystemExit as exit_:
        return exit_.code, err.getvalue()
    return 0, err.getvalue()


def test_verify_audit_chain_passes_on_a_clean_log(staff_user):
    _chain(staff_user)

    assert _verify() == (0, "")


def test_verify_audit_chain_names_an_edited_row(staff_user):
    rows = _chain(staff_user)

    _tamper("UPDATE audit_adminauditlog SET new_value = NULL, status_code = 201 WHERE id = %s", [rows[2].id])

    code, message = _verify()
    assert code == 1
    assert f"sequence {rows[2].sequence}" in message and str(rows[2].id) in message
    assert "changed" in message


def test_verify_audit_chain_names_the_gap_of_a_deleted_row(staff_user):
    rows = _chain(staff_user)

    _tamper("DELETE FROM audit_adminauditlog WHERE id = %s", [rows[1].id])

    code, message = _verify()
    assert code == 1
    assert f"sequence {rows[1].sequence}" in message and "missing" in message


def test_verify_audit_chain_detects_reordered_rows(staff_user):
    rows = _chain(staff_user)

    _tamper("UPDATE audit_adminauditlog SET sequence = -1 WHERE id = %s", [rows[1].id])
    _tamper("UPDATE audit_adminauditlog SET sequence = %s WHERE id = %s", [rows[1].sequence, rows[2].id])
    _tamper("UPDATE audit_adminauditlog SET sequence = %s WHERE id = %s", [rows[2].sequence, rows[1].id])

    code, message = _verify()
    assert code == 1
    assert f"sequence {rows[1].sequence}" in message


def test_verify_audit_chain_detects_removed_newest_rows(staff_user):
    rows = _chain(staff_user)

    _tamper("DELETE FROM audit_adminauditlog WHERE id = %s", [rows[-1].id])

    code, message = _verify()
    assert code == 1
    assert "newest rows are missing" in message
    assert AuditChainHead.objects.get().sequence == rows[-1].sequence


def test_a_row_records_the_status_the_client_got_and_waits_unsealed_for_the_sealer(staff_client, settings):
    settings.AUDIT_SEAL_ON_WRITE = False

    created = staff_client.post("/api/v1/admin/providers/", {"name": "mistral", "api_type": "mistral"}, format="json")

    assert created.status_code == 201
    row = AdminAuditLog.objects.get(action="create", resource_type="credits.provider")
    assert (row.method, row.status_code, row.sequence, row.row_hash) == ("POST", 201, None, "")
    listed = staff_client.get("/api/v1/admin/audit-logs/", {"action": "create"}).json()["results"]
    assert [(item["sealed"], item["sequence"], item["row_hash"]) for item in listed] == [(False, None, None)]

    sealed = staff_client.post("/api/v1/admin/audit-logs/seal/")

    assert sealed.status_code == 200
    assert sealed.json()["sealed"] == 1 and sealed.json()["head_sequence"] == 1
    row.refresh_from_db()
    assert (row.sequence, row.status_code, row.row_hash) == (1, 201, row.compute_hash())
    item = staff_client.get(f"/api/v1/admin/audit-logs/{row.pk}/").json()
    assert (item["sealed"], item["sequence"], item["status_code"], item["row_hash"]) == (True, 1, 201, row.row_hash)


def test_a_row_of_a_request_still_being_answered_is_left_for_a_later_seal(staff_user, settings, rf):
    from audit.context import RequestAudit, current_request_audit
    from audit.services import audit_chain_seal

    settings.AUDIT_SEAL_ON_WRITE = False
    token = current_request_audit.set(RequestAudit(request=rf.post("/api/v1/admin/probe/")))
    try:
        row = audit_record(action="update", resource_type="probe", actor=staff_user)
    finally:
        current_request_audit.reset(token)

    assert row.status_code is None
    assert audit_chain_seal().sealed == 0
    settings.AUDIT_STATUS_WAIT_SECONDS = 0
    assert audit_chain_seal().sealed == 1  # its response never reported back: sealed without a status
    row.refresh_from_db()
    assert (row.sequence, row.status_code) == (1, None)


def test_sealing_needs_the_chain_permission(support_client):
    response = support_client.post("/api/v1/admin/audit-logs/seal/")

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_console_lists_unsealed_rows_and_seals_them_on_demand(admin_client, admin_user, settings):
    settings.AUDIT_SEAL_ON_WRITE = False
    row = audit_record(action="update", resource_type="probe", actor=admin_user)
    head = AuditChainHeadFactory()  # made by the migration; made again after a flush

    listing = admin_client.get("/admin/audit/adminauditlog/")
    assert listing.status_code == 200 and "unsealed" in listing.content.decode()

    response = admin_client.post(
        "/admin/audit/auditchainhead/", {"action": "seal_audit_chain", "_selected_action": [head.pk]}, follow=True
    )

    assert response.status_code == 200
    assert "Sealed 1 rows; the chain ends at #1." in response.content.decode()
    row.refresh_from_db()
    assert row.position == "#1"
    assert "#1" in admin_client.get("/admin/audit/adminauditlog/").content.decode()


def test_the_sealer_is_on_the_beat_schedule_and_seals_what_was_written(staff_user, settings):
    from audit.tasks import seal_audit_chain

    settings.AUDIT_SEAL_ON_WRITE = False
    schedule = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    _chain(staff_user, length=3)

    assert schedule["audit.tasks.seal_audit_chain"].total_seconds() == settings.AUDIT_SEAL_INTERVAL_SECONDS
    assert seal_audit_chain.delay().get() == 3
    assert sorted(AdminAuditLog.objects.values_list("sequence", flat=True)) == [1, 2, 3]
