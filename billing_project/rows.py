"""Row writes the ORM has no call for."""

from django.db import DatabaseError
from django.db.models import Model
from django.db.models.signals import post_save, pre_save

from billing_project import sql
from billing_project.appends import write_ahead


def row_insert_unless_present(instance: Model, *, unique_fields: tuple[str, ...] | None) -> bool:
    """Inserts an unsaved instance unless a row with its `unique_fields` exists (None: a row equal
    to it under any unique constraint) (PostgreSQL's INSERT ... ON CONFLICT DO NOTHING, SQLite's
    alike): one statement instead of get_or_create's read, savepoint, insert and release. True when
    this call inserted it; the caller then holds the new row until its transaction ends. A
    concurrent insert of the same key waits for the first transaction and finds its row (False).
    A new row sends post_save as the ORM's create does: django-auditlog's object history listens to it
    (no pre_save: nothing listening to it applies to a row not yet there)."""
    statement, params = sql.insert([instance])
    target = _target(type(instance), unique_fields)
    with sql.default_connection().cursor() as cursor:
        cursor.execute(*sql.joined([(f"{statement} ON CONFLICT {target} DO NOTHING RETURNING 1", params)]))
        inserted = cursor.fetchone() is not None
    if inserted:
        _created(instance)
    return inserted


def rows_insert_unless_present(rows: list[tuple[Model, tuple[str, ...] | None]]) -> list[bool]:
    """`row_insert_unless_present` of each (instance, unique_fields) in order, each after the first
    tried only when the one before it was inserted by this call: on PostgreSQL in one round trip,
    each INSERT after the first selecting its row only where the row before it is there under its
    new primary key. Whether each was inserted (False also when not tried)."""
    db = sql.default_connection()
    if db.vendor != "postgresql":
        inserted = []
        for instance, unique_fields in rows:
            tried = not inserted or inserted[-1]
            inserted.append(tried and row_insert_unless_present(instance, unique_fields=unique_fields))
        return inserted
    statements, before = [], None
    for instance, unique_fields in rows:
        statement, params = sql.insert([instance])
        if before is not None:
            primary_key = type(before)._meta.pk
            statement += f" WHERE EXISTS (SELECT 1 FROM {sql.table(type(before))} WHERE {primary_key.column} = %s)"
            params = [*params, primary_key.get_db_prep_value(before.pk, db)]
        statements.append(
            (f"{statement} ON CONFLICT {_target(type(instance), unique_fields)} DO NOTHING RETURNING 1", params)
        )
        before = instance
    inserted = [bool(returned) for returned in sql.read_all(statements)]
    for (instance, _), new in zip(rows, inserted, strict=True):
        if new:
            _created(instance)
    return inserted


def row_insert(instance: Model, *, ahead: bool = False) -> None:
    """`Model.objects.create` of an unsaved instance, as one statement written out
    (billing_project.sql): the ORM compiling the INSERT was most of its cost. post_save is sent as
    in `row_insert_unless_present`. `ahead`: sent ahead of the next statement (`appends.write_ahead`)."""
    if ahead:
        write_ahead(sql.insert([instance]))
    else:
        sql.execute_all([sql.insert([instance])])
    _created(instance)


def _target(model: type[Model], unique_fields: tuple[str, ...] | None) -> str:
    if unique_fields is None:
        return ""
    return "(" + ", ".join(sql.column(model, name) for name in unique_fields) + ")"


def _created(instance: Model) -> None:
    """The instance now stored, as the ORM's create leaves it, and post_save sent."""
    alias = sql.default_connection().alias
    instance._state.adding, instance._state.db = False, alias
    post_save.send(sender=type(instance), instance=instance, created=True, update_fields=None, raw=False, using=alias)


def row_update(instance: Model, fields: list[str], *, ahead: bool = False) -> None:
    """`instance.save(update_fields=fields)` of a saved instance, as one statement written out: the
    same signals (django-auditlog's object history listens to them), auto_now fields among `fields`
    stamped, and a DatabaseError when no row has the instance's primary key, as the ORM raises.
    `ahead`: of a row the caller holds locked (so it is there), sent ahead of the next statement
    (`appends.write_ahead`)."""
    model = type(instance)
    db = sql.default_connection()
    update_fields = frozenset(fields)
    pre_save.send(sender=model, instance=instance, raw=False, using=db.alias, update_fields=update_fields)
    for name in fields:
        model._meta.get_field(name).pre_save(instance, add=False)
    if ahead:
        write_ahead(sql.update(instance, fields))
    else:
        with db.cursor() as cursor:
            cursor.execute(*sql.joined([sql.update(instance, fields)]))
            if cursor.rowcount != 1:
                raise DatabaseError("Save with update_fields did not affect any rows.")
    post_save.send(
        sender=model, instance=instance, created=False, update_fields=update_fields, raw=False, using=db.alias
    )
