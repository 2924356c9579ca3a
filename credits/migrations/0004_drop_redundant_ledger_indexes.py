"""Drops ledger indexes that another index already covers: every index costs each ledger insert.

The foreign keys' own indexes are dropped by name, leaving the constraints in place (letting Django
alter the fields would drop and re-add the constraints, re-checking every row of the ledgers).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# (index created with the foreign key, its table and column): deduction_user_time_idx,
# usage_user_time_idx and usage_provider_time_idx lead with the same columns.
FOREIGN_KEY_INDEXES = [
    ("credits_creditdeductionledger_user_id_3f73903a", "credits_creditdeductionledger", "user_id"),
    ("credits_tokenusageledger_user_id_01d31626", "credits_tokenusageledger", "user_id"),
    ("credits_tokenusageledger_provider_id_53759c12", "credits_tokenusageledger", "provider_id"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0003_usage_balance_after_and_hold"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Same columns as the foreign keys' own indexes.
        migrations.RemoveIndex(model_name="creditconsumption", name="consumption_deduction_idx"),
        migrations.RemoveIndex(model_name="creditconsumption", name="consumption_source_idx"),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{index}"', reverse_sql=f'CREATE INDEX "{index}" ON "{table}" ("{column}")'
                )
                for index, table, column in FOREIGN_KEY_INDEXES
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="creditdeductionledger",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="credit_deductions",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="tokenusageledger",
                    name="provider",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="usage",
                        to="credits.provider",
                    ),
                ),
                migrations.AlterField(
                    model_name="tokenusageledger",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="token_usage",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
    ]
