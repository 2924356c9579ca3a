"""An index for the console's periodic job list, which reads each job's latest result (the newest
task result of that job's name). django-celery-results indexes the name and the time apart; this
one answers "newest of this job" from the index alone. The table is django-celery-results', so the
index is made in SQL and left out of the model state."""

from django.db import migrations

INDEX = "task_result_latest_by_job"


class Migration(migrations.Migration):
    dependencies = [
        ("billing_project", "0009_revoked_token_families_plural"),
        ("django_celery_results", "0014_alter_taskresult_status"),
    ]

    operations = [
        migrations.RunSQL(
            sql=f"CREATE INDEX IF NOT EXISTS {INDEX} ON django_celery_results_taskresult (periodic_task_name, date_done DESC)",
            reverse_sql=f"DROP INDEX IF EXISTS {INDEX}",
        ),
    ]
