"""Periodic jobs in the database: seeded from the code's schedule, editable in the console (audited),
with each job's last run and latest result on its list; the code stays the default without undoing
staff edits; the file scheduler keeps its state outside the checkout."""

from datetime import timedelta
from io import StringIO

import pytest
from celery import current_app
from celery.schedules import crontab
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from audit.models import AdminAuditLog
from audit.tasks import seal_audit_chain
from billing_project.models import IdempotencyKey
from billing_project.schedules import CodeDefaultsDatabaseScheduler, FileScheduler
from billing_project.tasks import purge_idempotency_keys, send_email_verification
from billing_project.tests.test_authorization_walk import staff_member

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = StringIO()
    call_command("seed_schedules", stdout=out)
    return out.getvalue()


def test_seeding_creates_every_job_of_the_code_schedule_with_its_schedule():
    output = seed()

    assert f"Added {len(settings.CELERY_BEAT_SCHEDULE)} periodic jobs" in output
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        job = PeriodicTask.objects.get(name=name)
        assert job.task == entry["task"]
        assert job.enabled
        if isinstance(entry["schedule"], crontab):
            assert job.crontab.schedule == entry["schedule"]
        else:
            assert job.interval.schedule.run_every == entry["schedule"]


def test_seeding_again_adds_nothing_and_keeps_the_console_edits():
    seed()
    every_ten_minutes, _ = IntervalSchedule.objects.get_or_create(every=10, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.filter(name="reconcile-payments").update(interval=every_ten_minutes, enabled=False)
    PeriodicTask.objects.filter(name="expire-trials").delete()

    output = seed()

    assert "Added 1 periodic jobs: expire-trials." in output
    edited = PeriodicTask.objects.get(name="reconcile-payments")
    assert (edited.interval, edited.enabled) == (every_ten_minutes, False)
    assert PeriodicTask.objects.count() == len(settings.CELERY_BEAT_SCHEDULE)


# Beat's scheduler closes connections it finds inside a transaction: the test commits as beat does.
@pytest.mark.django_db(transaction=True)
def test_beat_starting_adds_missing_jobs_and_leaves_edited_ones_alone():
    seed()
    PeriodicTask.objects.filter(name="reconcile-payments").update(enabled=False)
    PeriodicTask.objects.filter(name="expire-trials").delete()

    scheduler = CodeDefaultsDatabaseScheduler(app=current_app, lazy=True)
    scheduler.setup_schedule()

    assert not PeriodicTask.objects.get(name="reconcile-payments").enabled
    assert PeriodicTask.objects.get(name="expire-trials").enabled


def test_the_file_scheduler_keeps_its_state_under_the_runtime_folder(tmp_path):
    filename = tmp_path / "runtime" / "celerybeat-schedule"

    scheduler = FileScheduler(app=current_app, schedule_filename=str(filename), lazy=True)
    scheduler.setup_schedule()
    scheduler.close()

    assert any(path.name.startswith("celerybeat-schedule") for path in filename.parent.iterdir())
    assert settings.CELERY_BEAT_SCHEDULE_FILENAME.startswith(str(settings.RUNTIME_DIR))
    assert not str(settings.RUNTIME_DIR).startswith(str(settings.BASE_DIR))


def test_the_job_list_shows_each_jobs_last_run_and_latest_result():
    seed()
    now = timezone.now()
    PeriodicTask.objects.filter(name="expire-credits").update(last_run_at=now, total_run_count=3)
    for status, done in (("FAILURE", now - timedelta(minutes=15)), ("SUCCESS", now)):
        TaskResult.objects.create(
            task_id=f"task-{status}",
            task_name="credits.tasks.expire_credits",
            periodic_task_name="expire-credits",
            status=status,
        )
        TaskResult.objects.filter(task_id=f"task-{status}").update(date_done=done)  # auto_now on create
    client = Client()
    client.force_login(staff_member("admin"))

    response = client.get("/admin/django_celery_beat/periodictask/", {"q": "expire-credits"})

    assert response.status_code == 200
    assert response.context["wrong_scheduler"] is False  # the console knows beat reads this list
    (job,) = response.context["cl"].result_list
    assert (job.name, job.total_run_count, job.latest_status, job.latest_done) == ("expire-credits", 3, "SUCCESS", now)


def test_editing_a_job_in_the_console_is_audited():
    seed()
    job = PeriodicTask.objects.get(name="expire-credits")
    client = Client()
    client.force_login(staff_member("admin"))
    form = client.get(f"/admin/django_celery_beat/periodictask/{job.pk}/change/").context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(enabled="", regtask=job.task, task="", args="[]", kwargs="{}", headers="{}")

    response = client.post(f"/admin/django_celery_beat/periodictask/{job.pk}/change/", data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert not PeriodicTask.objects.get(pk=job.pk).enabled
    row = AdminAuditLog.objects.get(resource_type="django_celery_beat.periodictask")
    assert (row.action, row.previous_value["enabled"], row.new_value["enabled"]) == ("update", True, False)


def test_a_task_result_is_shown_and_never_changed_in_the_console():
    result = TaskResult.objects.create(task_id="task-1", task_name="credits.tasks.expire_credits", status="SUCCESS")
    client = Client()
    client.force_login(staff_member("admin"))
    page = f"/admin/django_celery_results/taskresult/{result.pk}/"

    shown = client.get(f"{page}change/")
    changed = client.post(f"{page}change/", {"status": "FAILURE"})
    deleted = client.post(f"{page}delete/", {"post": "yes"})

    assert shown.status_code == 200
    assert (changed.status_code, deleted.status_code) == (403, 403)
    assert TaskResult.objects.get(pk=result.pk).status == "SUCCESS"


def test_running_a_job_now_from_the_console_runs_it_and_is_audited(user):
    seed()
    job = PeriodicTask.objects.get(name="purge-idempotency-keys")
    old = IdempotencyKey.objects.create(
        caller=f"user:{user.pk}", path="/api/v1/x/", key="old", request_hash="0" * 64, status_code=200
    )
    IdempotencyKey.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    client = Client()
    client.force_login(staff_member("admin"))

    response = client.post(
        "/admin/django_celery_beat/periodictask/", {"action": "run_tasks", "_selected_action": [job.pk]}
    )

    assert response.status_code == 302
    assert not IdempotencyKey.objects.exists()  # without a broker the task ran in the request
    row = AdminAuditLog.objects.get(resource_type="django_celery_beat.periodictask")
    assert (row.action, row.resource_id, row.new_value["name"]) == ("process", str(job.pk), "purge-idempotency-keys")


def test_results_are_kept_for_the_periodic_jobs_only(monkeypatch):
    for task in (purge_idempotency_keys, send_email_verification, seal_audit_chain):
        monkeypatch.setattr(task, "store_eager_result", True)  # the tests run tasks eagerly: store as a worker does

    purge_idempotency_keys.apply()
    send_email_verification.apply(args=(0, "https://example.com/verify/{token}"))
    seal_audit_chain.apply()

    kept = set(TaskResult.objects.values_list("task_name", flat=True))
    assert kept == {"billing_project.tasks.purge_idempotency_keys"}
    # Every job of the schedule but the sealer (every few seconds; its work is the chain) keeps its results.
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        assert current_app.tasks[entry["task"]].ignore_result is (name == "seal-audit-chain"), name


def test_the_latest_result_of_each_job_is_read_from_an_index():
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, TaskResult._meta.db_table)

    assert indexes["task_result_latest_by_job"]["columns"] == ["periodic_task_name", "date_done"]
