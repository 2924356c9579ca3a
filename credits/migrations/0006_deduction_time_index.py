"""The staff list of deductions (admin/credits/deductions/) reads all users' rows newest first or by date
range: an index on the time, with the id that breaks ties in its order."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0005_price_book_dimensions_and_64_bit_usage"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="creditdeductionledger",
            index=models.Index(fields=["created_at", "id"], name="deduction_time_idx"),
        ),
    ]
