"""Periodic jobs in the console: each job's schedule is editable (audited), with its last run and the
result of its latest run beside it; task results are read-only."""

from django.contrib import admin
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule
from django_celery_results import admin as results_admin
from django_celery_results.models import GroupResult, TaskResult

from audit.admin_base import AdminAuditMixin, ReadOnlyModelAdmin
from audit.models import AuditAction
from audit.services import audit_record, resource_type_of


class PeriodicTaskAdmin(AdminAuditMixin, beat_admin.PeriodicTaskAdmin):
    list_display = (
        "name",
        "enabled",
        "scheduler",
        "last_run_at",
        "total_run_count",
        "last_result",
        "last_result_at",
    )
    # Enabling and disabling are edits of the job, which are audited; the stock bulk updates are not.
    actions = ("run_tasks",)

    def get_queryset(self, request):
        latest = TaskResult.objects.filter(periodic_task_name=OuterRef("name")).order_by("-date_done")
        return (
            super()
            .get_queryset(request)
            .annotate(
                latest_status=Subquery(latest.values("status")[:1]),
                latest_done=Subquery(latest.values("date_done")[:1]),
            )
        )

    @admin.display(description="last result", ordering="latest_status")
    def last_result(self, obj):
        return obj.latest_status or "-"

    @admin.display(description="last result at", ordering="latest_done")
    def last_result_at(self, obj):
        return obj.latest_done

    @admin.action(description="Run the selected jobs now")
    def run_tasks(self, request, queryset):
        with transaction.atomic():
            for task in queryset:
                audit_record(
                    action=AuditAction.PROCESS,
                    resource_type=resource_type_of(task),
                    resource_id=str(task.pk),
                    new_value={"name": task.name, "task": task.task, "run": "now"},
                    request=request,
                )
        super().run_tasks(request, queryset)


class IntervalScheduleAdmin(AdminAuditMixin, beat_admin.IntervalScheduleAdmin):
    pass


class SolarScheduleAdmin(AdminAuditMixin, beat_admin.SolarScheduleAdmin):
    pass


class CrontabScheduleAdmin(AdminAuditMixin, beat_admin.CrontabScheduleAdmin):
    pass


class ClockedScheduleAdmin(AdminAuditMixin, beat_admin.ClockedScheduleAdmin):
    pass


class TaskResultAdmin(ReadOnlyModelAdmin, results_admin.TaskResultAdmin):
    list_display = ("date_done", "periodic_task_name", "task_name", "status", "worker")
    list_filter = ("status", "periodic_task_name", "task_name", "date_done")
    search_fields = ("=task_id", "periodic_task_name", "task_name")
    date_hierarchy = "date_done"
    ordering = ("-date_done",)


for model, model_admin in (
    (PeriodicTask, PeriodicTaskAdmin),
    (IntervalSchedule, IntervalScheduleAdmin),
    (SolarSchedule, SolarScheduleAdmin),
    (CrontabSchedule, CrontabScheduleAdmin),
    (ClockedSchedule, ClockedScheduleAdmin),
    (TaskResult, TaskResultAdmin),
):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
# Group results are never used here (no chords or groups).
admin.site.unregister(GroupResult)
