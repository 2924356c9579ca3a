"""The roles again (billing_project.roles), now that verified e-mails, revoked token families and
coupon code guesses have tables: admin holds every permission, the others what their table names."""

from django.db import migrations

from billing_project.roles import roles_sync


def apply_roles(apps, schema_editor):
    roles_sync(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("billing_project", "0005_verified_email_and_token_families"),
        ("coupons", "0003_code_guesses"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
