"""The roles again (billing_project.roles), after every app's latest tables (the payments received,
the provider object versions, the audit chain's sealer, the balance's tier): admin holds every
permission, the others what their table names."""

from django.db import migrations

from billing_project.roles import roles_sync


def apply_roles(apps, schema_editor):
    roles_sync(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("billing_project", "0007_roles_cover_schedules_and_task_results"),
        ("audit", "0005_unsealed_rows_and_sealer"),
        ("payments", "0005_payment_received_and_minor_units"),
        ("licensing", "0003_license_purchase_currency"),
        ("credits", "0007_subscription_ids_and_tier_on_balance"),
        ("subscriptions", "0010_amounts_in_minor_units"),
        ("coupons", "0003_code_guesses"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
