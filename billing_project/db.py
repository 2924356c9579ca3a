"""Database-level guards that the ORM cannot express, applied on PostgreSQL only."""

from django.db import migrations

APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION billing_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    nullable_column text;
    old_row jsonb;
    new_row jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION '% rows are append-only: delete refused', TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation';
    END IF;
    old_row := to_jsonb(OLD);
    new_row := to_jsonb(NEW);
    -- The one change allowed: a reference to a deleted row (a user, under GDPR) becoming NULL.
    IF TG_NARGS > 0 THEN
        FOREACH nullable_column IN ARRAY TG_ARGV LOOP
            IF new_row -> nullable_column = 'null'::jsonb THEN
                old_row := old_row - nullable_column;
                new_row := new_row - nullable_column;
            END IF;
        END LOOP;
    END IF;
    IF old_row IS DISTINCT FROM new_row THEN
        RAISE EXCEPTION '% rows are append-only: update refused', TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
"""


def _on_postgresql(sql: str, reverse_sql: str) -> migrations.RunPython:
    def forward(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)

    def backward(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(reverse_sql, params=None)

    return migrations.RunPython(forward, backward, elidable=False)


def create_append_only_function() -> migrations.RunPython:
    return _on_postgresql(APPEND_ONLY_FUNCTION, "DROP FUNCTION IF EXISTS billing_append_only()")


def append_only_trigger(table: str, *, allow_delete: bool, nullable_columns: tuple[str, ...] = ()):
    """Refuses UPDATE (and DELETE unless `allow_delete`, kept for GDPR cascades) on `table`,
    except setting one of `nullable_columns` to NULL."""
    events = "UPDATE" if allow_delete else "UPDATE OR DELETE"
    arguments = ", ".join(f"'{column}'" for column in nullable_columns)
    trigger = f"{table}_append_only"
    return _on_postgresql(
        f"CREATE TRIGGER {trigger} BEFORE {events} ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION billing_append_only({arguments})",
        f"DROP TRIGGER IF EXISTS {trigger} ON {table}",
    )
