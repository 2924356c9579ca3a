from django.db import migrations

from billing_project.db import append_only_trigger


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
        ("billing_project", "0002_append_only_function"),
    ]

    operations = [
        append_only_trigger("audit_adminauditlog", allow_delete=False, nullable_columns=("actor_id",)),
        append_only_trigger(
            "audit_paymentevent", allow_delete=False, nullable_columns=("user_id", "webhook_event_id")
        ),
    ]
