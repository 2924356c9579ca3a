from django.db import migrations

from billing_project.db import append_only_trigger


class Migration(migrations.Migration):
    """Ledgers never change. Deleting stays possible only through a user's GDPR cascade."""

    dependencies = [
        ("credits", "0001_initial"),
        ("billing_project", "0002_append_only_function"),
    ]

    operations = [
        append_only_trigger(
            "credits_tokenusageledger", allow_delete=True, nullable_columns=("subscription_id", "deduction_id")
        ),
        append_only_trigger(
            "credits_creditdeductionledger", allow_delete=True, nullable_columns=("subscription_id", "reversed_by_id")
        ),
        append_only_trigger("credits_creditconsumption", allow_delete=True),
        append_only_trigger(
            "credits_creditallocation", allow_delete=True, nullable_columns=("subscription_id", "granted_by_id")
        ),
        append_only_trigger(
            "credits_marginauditlog", allow_delete=False, nullable_columns=("pricing_config_id", "changed_by_id")
        ),
    ]
