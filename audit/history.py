"""Object history (django-auditlog) registration for the console."""

from auditlog.registry import auditlog


def history_track(model, *, exclude_fields=("updated_at",), **options) -> None:
    """Tracks a model's own fields. django-auditlog would also log each reverse relation (the other
    side of a foreign key) as the text of its manager, e.g. `credits.CreditConsumption.None`: noise."""
    reverse_relations = [field.name for field in model._meta.get_fields() if field.auto_created and not field.concrete]
    auditlog.register(model, exclude_fields=[*exclude_fields, *reverse_relations], **options)
