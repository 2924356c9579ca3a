"""Row writes the ORM has no call for."""

from django.db.models import Model
from django.db.models.signals import post_save

from billing_project import sql


def row_insert_unless_present(instance: Model, *, unique_fields: tuple[str, ...] | None) -> bool:
    """Inserts an unsaved instance unless a row with its `unique_fields` exists (None: a row equal
    to it under any unique constraint) (PostgreSQL's INSERT ... ON CONFLICT DO NOTHING, SQLite's
    alike): one statement instead of get_or_create's read, savepoint, insert and release. True when
    this call inserted it; the caller then holds the new row until its transaction ends. A
    concurrent insert of the same key waits for the first transaction and finds its row (False).
    A new row sends post_save as the ORM's create does: django-auditlog's object history listens to it
    (no pre_save: nothing listening to it applies to a row not yet there)."""
    model = type(instance)
    statement, params = sql.insert([instance])
    target = ""
    if unique_fields is not None:
        target = "(" + ", ".join(sql.column(model, name) for name in unique_fields) + ")"
    with sql.default_connection().cursor() as cursor:
        cursor.execute(*sql.joined([(f"{statement} ON CONFLICT {target} DO NOTHING RETURNING 1", params)]))
        inserted = cursor.fetchone() is not None
    if inserted:
        alias = sql.default_connection().alias
        instance._state.adding, instance._state.db = False, alias
        post_save.send(sender=model, instance=instance, created=True, update_fields=None, raw=False, using=alias)
    return inserted
