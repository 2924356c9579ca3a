"""The roles again (billing_project.roles), now that payments received have a table: admin holds
every permission, support and finance read them."""

from django.db import migrations

from billing_project.roles import roles_sync


def apply_roles(apps, schema_editor):
    roles_sync(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0003_payment_received_and_minor_units"),
        ("billing_project", "0006_roles_cover_account_and_guess_tables"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
