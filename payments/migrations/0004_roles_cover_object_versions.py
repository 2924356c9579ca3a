"""The roles again (billing_project.roles), now that the provider object versions have a table:
admin holds every permission, the others what their table names."""

from django.db import migrations

from billing_project.roles import roles_sync


def apply_roles(apps, schema_editor):
    roles_sync(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0003_webhook_unmatched_object_versions"),
        ("billing_project", "0007_roles_cover_schedules_and_task_results"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
