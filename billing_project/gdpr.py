"""A user's personal data: export and erasure (GDPR).

Each app contributes the part of the export it owns through `export_section`, in its `exports`
module, so this module needs no app imports. Erasure relies on the foreign keys' delete rules:
personal data cascades away, financial history (coupon redemptions, payment events) keeps its rows
with the user set to NULL, audit rows are never deleted. The responses stored for the user's
idempotency keys (which may carry a license key) go with the user, however the user is deleted.
"""

from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.module_loading import autodiscover_modules

from audit.models import AuditAction
from audit.redaction import mask_license_keys_in
from audit.services import audit_record, to_json
from billing_project.auth import user_caller
from billing_project.codes import ErrorCode
from billing_project.errors import Conflict, NotFound
from billing_project.models import IdempotencyKey
from billing_project.roles import FULL_LICENSE_KEY_PERMISSION

_export_sections: dict[str, Callable] = {}


def export_section(name: str):
    """Registers `fn(user) -> JSON-ready data` as the `name` part of a user's export."""

    def register(fn):
        _export_sections[name] = fn
        return fn

    return register


def user_get(*, user_id: int):
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is None:
        raise NotFound("No user with this id.", code=ErrorCode.USER_NOT_FOUND)
    return user


def user_export(*, user, actor) -> dict:
    """Everything the service holds about a user, for the staff member `actor`; the export is an
    audited read, and license keys are masked unless `actor` may see them whole."""
    autodiscover_modules("exports")
    data = {
        "user": {
            "id": user.pk,
            "email": user.email,
            "username": user.get_username(),
            "date_joined": user.date_joined,
            "last_login": user.last_login,
            "is_staff": user.is_staff,
        },
        **{name: section(user) for name, section in sorted(_export_sections.items())},
    }
    full_keys = actor.has_perm(FULL_LICENSE_KEY_PERMISSION)
    audit_record(
        action=AuditAction.EXPORT,
        resource_type="auth.user",
        resource_id=str(user.pk),
        new_value={"sections": ["user", *sorted(_export_sections)], "full_license_keys": full_keys},
        actor=actor,
    )
    data = to_json(data)
    return data if full_keys else mask_license_keys_in(data)


@transaction.atomic
def user_erase(*, user, actor) -> None:
    if user.pk == actor.pk:
        raise Conflict("Staff cannot erase their own account.", code=ErrorCode.CANNOT_ERASE_SELF)
    if user.is_superuser:
        raise Conflict("A superuser cannot be erased through the API.", code=ErrorCode.CANNOT_ERASE_SUPERUSER)
    # The audit row keeps no personal data of the erased user: only the id and account facts.
    audit_record(
        action=AuditAction.DELETE,
        resource_type="auth.user",
        resource_id=str(user.pk),
        previous_value={"id": user.pk, "is_staff": user.is_staff, "date_joined": user.date_joined},
        actor=actor,
    )
    user.delete()


def user_deleted(sender, instance, **kwargs):
    """post_delete of the user model: their stored idempotent responses are personal data, and
    would otherwise still be replayed to their (not yet expired) access token."""
    IdempotencyKey.objects.filter(caller=user_caller(instance.pk)).delete()
