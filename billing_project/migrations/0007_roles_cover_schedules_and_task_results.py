"""The roles again (billing_project.roles), now that the periodic jobs (django-celery-beat) and task
results (django-celery-results) have tables: admin holds every permission, the others what their
table names."""

from django.db import migrations

from billing_project.roles import roles_sync


def apply_roles(apps, schema_editor):
    roles_sync(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("billing_project", "0006_roles_cover_account_and_guess_tables"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("django_celery_results", "0014_alter_taskresult_status"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
