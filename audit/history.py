"""Object history (django-auditlog): registration for the console, and who made each change."""

from auditlog.registry import auditlog
from django.contrib.auth import get_user_model

from audit.context import current_request_audit
from billing_project.net import client_ip


def history_track(model, *, exclude_fields=("updated_at",), **options) -> None:
    """Tracks a model's own fields. django-auditlog would also log each reverse relation (the other
    side of a foreign key) as the text of its manager, e.g. `credits.CreditConsumption.None`: noise."""
    reverse_relations = [field.name for field in model._meta.get_fields() if field.auto_created and not field.concrete]
    auditlog.register(model, exclude_fields=[*exclude_fields, *reverse_relations], **options)


def history_entry_of_request(sender, instance, **kwargs) -> None:
    """`pre_save` of django-auditlog's LogEntry: the request being served names its actor and address.

    Connected once, in place of django-auditlog's middleware, which connects and disconnects a receiver
    around every request (a quarter of a small request's time in the worker). The actor is read when
    the entry is written, so a JWT caller, known only once DRF has authenticated it, is named; the
    address is `client_ip`'s, which trusts X-Forwarded-For only from the configured proxies."""
    state = current_request_audit.get()
    if state is None:
        return
    request = state.request
    if instance.actor_id is None:
        user = getattr(request, "user", None)
        # A service token's caller is no database user, and an anonymous one is nobody.
        if isinstance(user, get_user_model()) and user.is_authenticated:
            instance.actor = user
            instance.actor_email = getattr(user, "email", None)
    instance.remote_addr = client_ip(request)
