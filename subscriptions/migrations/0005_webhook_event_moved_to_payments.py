"""WebhookEvent now belongs to payments (its table and rows go with it: see payments 0001-0002)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0004_payment_completed_index"),
        ("audit", "0004_payment_event_moved_to_payments"),
        ("payments", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="WebhookEvent")]),
    ]
