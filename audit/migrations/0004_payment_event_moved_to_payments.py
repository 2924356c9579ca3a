"""PaymentEvent now belongs to payments (its table and rows go with it: see payments 0001-0002)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0003_sign_in_actions"),
        ("payments", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="PaymentEvent")]),
    ]
