"""PaymentEvent now belongs to payments (its table and rows go with it: see payments 0001-0002)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_append_only_triggers"),
        ("payments", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="PaymentEvent")]),
    ]
