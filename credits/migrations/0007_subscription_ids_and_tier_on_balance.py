"""Credits no longer points at subscriptions in its schema (SPEC 0: apps depend one way).

- The ledgers (allocations, deductions, usage) keep the subscription's id as a plain UUID column: the
  same `subscription_id` column with every value, only its foreign key constraint and index dropped
  (no ledger query looks rows up by subscription; the allocation's unique constraint, recreated on the
  renamed field, covers the one lookup).
- The balance row carries the user's tier and live subscription, which subscriptions pushes down
  (credits.services.account_tier_set); subscriptions' migration 0007 fills them from existing data.
"""

from django.db import migrations, models
from django.db.models import Q

TIERS = ["free", "pro", "pro_max", "enterprise_pro", "enterprise_max", "perpetual"]


def plain_subscription_id(model_name: str, help_text: str) -> list:
    """The foreign key becomes a UUID field of the same column: altered in the database (its constraint
    and index dropped, no row touched), replaced by a field named for the column in the state."""
    return [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.AlterField(
                    model_name=model_name,
                    name="subscription",
                    field=models.UUIDField(null=True, blank=True, db_column="subscription_id"),
                ),
            ],
            state_operations=[
                migrations.RemoveField(model_name=model_name, name="subscription"),
                migrations.AddField(
                    model_name=model_name,
                    name="subscription_id",
                    field=models.UUIDField(blank=True, null=True, help_text=help_text),
                ),
            ],
        ),
    ]


AT_THE_TIME = "The user's live subscription at the time (a plain id: the subscription may be gone)."


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0006_deduction_time_index"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="creditallocation", name="allocation_once_per_period"),
        *plain_subscription_id(
            "creditallocation", "The subscription these credits come with (a plain id: it may be gone)."
        ),
        migrations.AddConstraint(
            model_name="creditallocation",
            constraint=models.UniqueConstraint(
                condition=Q(subscription_id__isnull=False),
                fields=("subscription_id", "period_start", "source"),
                name="allocation_once_per_period",
            ),
        ),
        *plain_subscription_id("creditdeductionledger", AT_THE_TIME),
        *plain_subscription_id("tokenusageledger", AT_THE_TIME),
        migrations.AddField(
            model_name="usercreditbalance",
            name="tier",
            field=models.CharField(
                choices=[
                    ("free", "Free"),
                    ("pro", "Pro"),
                    ("pro_max", "Pro Max"),
                    ("enterprise_pro", "Enterprise Pro"),
                    ("enterprise_max", "Enterprise Max"),
                    ("perpetual", "Perpetual"),
                ],
                default="free",
                help_text="The user's tier as subscriptions last set it.",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="usercreditbalance",
            name="subscription_id",
            field=models.UUIDField(
                blank=True,
                help_text="The user's live subscription as subscriptions last set it (a plain id).",
                null=True,
            ),
        ),
        migrations.AddConstraint(
            model_name="usercreditbalance",
            constraint=models.CheckConstraint(
                condition=Q(tier__in=TIERS), name="credits_usercreditbalance_tier_valid"
            ),
        ),
    ]
