from django.db import migrations

from billing_project.db import create_append_only_function


class Migration(migrations.Migration):
    dependencies = [("billing_project", "0001_initial")]

    operations = [create_append_only_function()]
