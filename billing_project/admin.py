from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework_simplejwt.token_blacklist.admin import BlacklistedTokenAdmin as JwtBlacklistedTokenAdmin
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from audit.admin_base import AdminAuditMixin, ReadOnlyModelAdmin
from audit.models import AuditAction
from audit.redaction import REDACTED
from audit.services import audit_record, resource_type_of
from billing_project.gdpr import user_erase
from billing_project.models import IdempotencyKey, RevokedTokenFamily, VerifiedEmail
from credits.admin import grant_credits

User = get_user_model()


class AuditedPasswordChangeForm(AdminPasswordChangeForm):
    """The console's password form: the new password and its audit row commit together."""

    @transaction.atomic
    def save(self, commit=True):
        user = super().save(commit=commit)
        if commit:
            audit_record(
                action=AuditAction.UPDATE,
                resource_type=resource_type_of(user),
                resource_id=str(user.pk),
                new_value={"password": REDACTED, "has_usable_password": user.has_usable_password()},
            )
        return user


class UserAdmin(AdminAuditMixin, DjangoUserAdmin):
    """Accounts, audited like every console write (snapshot() redacts the password hash).

    Deleting an account is the GDPR erasure: its personal data cascades away with it (ledgers
    included, which staff cannot delete one by one), its financial history stays anonymised.
    """

    change_password_form = AuditedPasswordChangeForm
    actions = [grant_credits]
    list_display = ("email", "username", "is_staff", "is_superuser", "is_active", "date_joined", "last_login")
    search_fields = ("email", "username", "first_name", "last_name")

    def has_delete_permission(self, request, obj=None):
        if obj is not None and (obj.is_superuser or obj.pk == request.user.pk):
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs, request):
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def delete_model(self, request, obj):
        user_erase(user=obj, actor=request.user)

    def get_actions(self, request):
        # Erasure is one account at a time, through the delete page and its confirmation.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


admin.site.unregister(User)
admin.site.register(User, UserAdmin)


class GroupAdmin(AdminAuditMixin, DjangoGroupAdmin):
    """Groups grant permissions: each change is audited like any console write."""


class BlacklistedTokenAdmin(AdminAuditMixin, JwtBlacklistedTokenAdmin):
    """Revoked refresh tokens: revoking (adding) or un-revoking (deleting) a session is audited.
    Issued tokens (OutstandingToken) stay read-only, as simplejwt registers them."""


for model, model_admin in (
    (Group, GroupAdmin),
    (BlacklistedToken, BlacklistedTokenAdmin),
):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "caller", "path", "key", "status_code")
    list_filter = ("status_code",)
    search_fields = ("caller", "path", "=key")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(VerifiedEmail)
class VerifiedEmailAdmin(ReadOnlyModelAdmin):
    list_display = ("email", "user", "verified_at")
    list_select_related = ("user",)
    search_fields = ("email", "user__email")
    date_hierarchy = "verified_at"


@admin.register(RevokedTokenFamily)
class RevokedTokenFamilyAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "user", "reason")
    list_select_related = ("user",)
    search_fields = ("user__email", "=family")
    date_hierarchy = "created_at"
