"""An unsealed audit row's status may be corrected, not only filled in once.

A Stripe delivery's rows are written with the answer the inbox gives once its transaction commits
(200), which saves every delivery a second transaction. Should the client get another answer after
all, the rows take it while they are unsealed. A sealed row still takes no change at all (but the
GDPR actor -> NULL); an unsealed one only its seal and its status.
"""

from importlib import import_module

from django.db import migrations

# The guard function as 0005 created it (its trigger stays as it is).
STATUS_ONCE = import_module("audit.migrations.0005_unsealed_rows_and_sealer").AUDIT_ROW_GUARD.split("DROP TRIGGER")[0]
# Its rule for an unsealed row's status: filled in once, that is, exempt while still empty.
STATUS_ONCE_RULE = """        IF OLD.status_code IS NULL THEN
            old_row := old_row - 'status_code';
            new_row := new_row - 'status_code';
        END IF;
"""
STATUS_CORRECTABLE_RULE = """        -- Since 0006 it may also be corrected (a Stripe delivery's rows are written with 200).
        old_row := old_row - 'status_code';
        new_row := new_row - 'status_code';
"""
assert STATUS_ONCE_RULE in STATUS_ONCE
STATUS_CORRECTABLE = STATUS_ONCE.replace(STATUS_ONCE_RULE, STATUS_CORRECTABLE_RULE)


def guard_replace(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_unsealed_rows_and_sealer")]

    operations = [
        migrations.RunPython(guard_replace(STATUS_CORRECTABLE), guard_replace(STATUS_ONCE), elidable=False),
    ]
