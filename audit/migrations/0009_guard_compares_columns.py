"""The audit rows' guard compares their columns instead of their whole rows turned into JSON.

The rules stay those of 0006: no row is deleted; a sealed row takes no change but the GDPR actor ->
NULL; an unsealed one takes its seal and its status as well. The guard of 0005 turned the old and the
new row into jsonb and took the exempt keys out of both on every update: more than half of what
sealing a row cost the database (20,000 rows of 2 KB: 66-69 µs per row with it, 29-31 without it,
36-42 with this one). Here the trigger's WHEN condition, evaluated without calling any function,
lets an allowed update through, and the function only raises. The columns are named one by one:
`audit/tests/test_sealer.py` changes every column of the table in turn, so a column added without
its place here fails there.
"""

from importlib import import_module

from django.db import migrations

GUARDED = (
    "id",
    "created_at",
    "actor_email",
    "action",
    "resource_type",
    "resource_id",
    "endpoint",
    "method",
    "ip_address",
    "user_agent",
    "request_body",
    "previous_value",
    "new_value",
    "error_message",
    '"timestamp"',
)
SEAL = ("sequence", "prev_hash", "row_hash", "status_code")


def _row(prefix: str, columns: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"{prefix}.{column}" for column in columns) + ")"


GUARD_BY_COLUMNS = f"""
CREATE OR REPLACE FUNCTION audit_adminauditlog_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit rows are append-only: % refused', lower(TG_OP) USING ERRCODE = 'restrict_violation';
END $$;
DROP TRIGGER IF EXISTS audit_adminauditlog_guard ON audit_adminauditlog;
DROP FUNCTION IF EXISTS audit_adminauditlog_guard();
CREATE TRIGGER audit_adminauditlog_guard BEFORE UPDATE ON audit_adminauditlog FOR EACH ROW
WHEN (
    {_row("OLD", GUARDED)} IS DISTINCT FROM {_row("NEW", GUARDED)}
    -- A deleted user (GDPR) leaves the row without its actor; actor_email keeps who it was.
    OR (NEW.actor_id IS NOT NULL AND NEW.actor_id IS DISTINCT FROM OLD.actor_id)
    -- Unsealed, a row takes its seal once and its status (filled in or corrected); sealed, neither.
    OR (OLD.sequence IS NOT NULL AND {_row("OLD", SEAL)} IS DISTINCT FROM {_row("NEW", SEAL)})
)
EXECUTE FUNCTION audit_adminauditlog_refuse();
CREATE TRIGGER audit_adminauditlog_no_delete BEFORE DELETE ON audit_adminauditlog FOR EACH ROW
EXECUTE FUNCTION audit_adminauditlog_refuse();
"""

MIGRATION_0006 = import_module("audit.migrations.0006_unsealed_status_correctable")

# 0006's guard, whole rows as jsonb, for going back.
GUARD_BY_JSON = (
    MIGRATION_0006.STATUS_CORRECTABLE
    + """
DROP TRIGGER IF EXISTS audit_adminauditlog_no_delete ON audit_adminauditlog;
DROP TRIGGER IF EXISTS audit_adminauditlog_guard ON audit_adminauditlog;
DROP FUNCTION IF EXISTS audit_adminauditlog_refuse();
CREATE TRIGGER audit_adminauditlog_guard BEFORE UPDATE OR DELETE ON audit_adminauditlog
    FOR EACH ROW EXECUTE FUNCTION audit_adminauditlog_guard();
"""
)

# Run on PostgreSQL only, as 0006 runs it.
guard_replace = MIGRATION_0006.guard_replace


class Migration(migrations.Migration):
    dependencies = [("audit", "0008_foreign_keys_indexed_by_their_composite_indexes")]

    operations = [
        migrations.RunPython(guard_replace(GUARD_BY_COLUMNS), guard_replace(GUARD_BY_JSON), elidable=False),
    ]
