"""An unsealed audit row's status may be corrected, not only filled in once.

A Stripe delivery's rows are written with the answer the inbox gives once its transaction commits
(200), which saves every delivery a second transaction. Should the client get another answer after
all, the rows take it while they are unsealed. A sealed row still takes no change at all (but the
GDPR actor -> NULL); an unsealed one only its seal and its status.
"""

from django.db import migrations

GUARD = """
CREATE OR REPLACE FUNCTION audit_adminauditlog_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_row jsonb;
    new_row jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit rows are append-only: delete refused' USING ERRCODE = 'restrict_violation';
    END IF;
    old_row := to_jsonb(OLD);
    new_row := to_jsonb(NEW);
    -- A deleted user (GDPR) leaves the row without its actor; actor_email keeps who it was.
    IF NEW.actor_id IS NULL THEN
        old_row := old_row - 'actor_id';
        new_row := new_row - 'actor_id';
    END IF;
    IF OLD.sequence IS NULL THEN
        -- Unsealed: the sealer sets the seal once; the status of the response{status_rule}
        old_row := old_row - 'sequence' - 'prev_hash' - 'row_hash';
        new_row := new_row - 'sequence' - 'prev_hash' - 'row_hash';
{status_exempt}    END IF;
    IF old_row IS DISTINCT FROM new_row THEN
        RAISE EXCEPTION 'audit rows are append-only: update refused' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
"""

STATUS_CORRECTABLE = GUARD.replace("{status_rule}", " is filled in or corrected.").replace(
    "{status_exempt}",
    """        old_row := old_row - 'status_code';
        new_row := new_row - 'status_code';
""",
)
STATUS_ONCE = GUARD.replace("{status_rule}", " may be filled in, once.").replace(
    "{status_exempt}",
    """        IF OLD.status_code IS NULL THEN
            old_row := old_row - 'status_code';
            new_row := new_row - 'status_code';
        END IF;
""",
)


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
