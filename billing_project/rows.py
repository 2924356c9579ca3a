"""Row writes the ORM has no call for."""

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model
from django.db.models.sql import InsertQuery


def row_insert_unless_present(instance: Model, *, unique_fields: tuple[str, ...] | None) -> bool:
    """Inserts an unsaved instance unless a row with its `unique_fields` exists (None: a row equal
    to it under any unique constraint) (PostgreSQL's INSERT ... ON CONFLICT DO NOTHING, SQLite's
    alike): one statement instead of get_or_create's read, savepoint, insert and release. True when
    this call inserted it; the caller then holds the new row until its transaction ends. A
    concurrent insert of the same key waits for the first transaction and finds its row (False).
    No model signal is sent."""
    model = type(instance)
    db = connections[DEFAULT_DB_ALIAS]
    fields = [field for field in model._meta.local_concrete_fields if not field.generated]
    query = InsertQuery(model)
    query.insert_values(fields, [instance])
    sql, params = query.get_compiler(connection=db).as_sql()[0]
    target = ""
    if unique_fields is not None:
        target = "(" + ", ".join(db.ops.quote_name(model._meta.get_field(name).column) for name in unique_fields) + ")"
    with db.cursor() as cursor:
        cursor.execute(f"{sql} ON CONFLICT {target} DO NOTHING RETURNING 1", params)
        inserted = cursor.fetchone() is not None
    if inserted:
        instance._state.adding, instance._state.db = False, DEFAULT_DB_ALIAS
    return inserted
