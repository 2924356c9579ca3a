"""The roles again (billing_project.roles), after the tables of credit packs, auto-recharge, monthly
budgets, notifications and outbound webhooks: admin holds every permission, the others what their
table names."""

from django.db import migrations

from billing_project.roles import roles_sync


def apply_roles(apps, schema_editor):
    roles_sync(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("billing_project", "0012_outbound_webhook_delivery"),
        ("audit", "0005_unsealed_rows_and_sealer"),
        ("payments", "0006_credit_operation_kinds"),
        ("licensing", "0003_license_purchase_currency"),
        ("credits", "0011_monthly_budget_and_balance_alerts"),
        ("subscriptions", "0010_amounts_in_minor_units"),
        ("coupons", "0004_redemption_currency_and_money_by_currency"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
