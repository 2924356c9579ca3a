import json

from axes.admin import AccessAttemptAdmin as AxesAccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.http import HttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django_otp.plugins.otp_static.admin import StaticDeviceAdmin as OtpStaticDeviceAdmin
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin as OtpTOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework_simplejwt.token_blacklist.admin import BlacklistedTokenAdmin as JwtBlacklistedTokenAdmin
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from audit.admin_base import AdminAuditMixin, ReadOnlyModelAdmin
from audit.models import AuditAction
from audit.redaction import REDACTED, mask_secret, redact
from audit.services import audit_record, resource_type_of
from billing_project import customer_console
from billing_project.admin_actions import ReasonForm, form_action
from billing_project.admin_site import may_open_customer_page
from billing_project.gdpr import user_erase, user_export
from billing_project.models import IdempotencyKey, RevokedTokenFamily, ServiceToken, StaffSession, VerifiedEmail
from billing_project.service_tokens import service_token_revoke
from billing_project.signin import refresh_token_revoke, staff_session_revoke
from credits.admin import GrantCreditsPermission, grant_credits

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


@admin.action(description="Export the personal data of the selected user (JSON)", permissions=["export"])
def export_personal_data(modeladmin, request, queryset):
    """The GDPR export as a download: one user at a time, each export an audited read."""
    if queryset.count() != 1:
        modeladmin.message_user(request, "Select exactly one user to export.", messages.ERROR)
        return None
    user = queryset.get()
    response = HttpResponse(
        json.dumps(user_export(user=user, actor=request.user), indent=2), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="user-{user.pk}-export.json"'
    return response


class UserAdmin(GrantCreditsPermission, AdminAuditMixin, DjangoUserAdmin):
    """Accounts, audited like every console write (snapshot() redacts the password hash).

    Deleting an account is the GDPR erasure: its personal data cascades away with it (ledgers
    included, which staff cannot delete one by one), its financial history stays anonymised.
    Only a superuser makes another.
    """

    change_password_form = AuditedPasswordChangeForm
    change_form_template = "admin/customer_user_change_form.html"
    actions = [grant_credits, export_personal_data]
    list_display = (
        "email",
        "username",
        "customer_page",
        "is_staff",
        "is_superuser",
        "is_active",
        "date_joined",
        "last_login",
    )

    def get_list_display(self, request):
        shown = super().get_list_display(request)
        return shown if may_open_customer_page(request.user) else [name for name in shown if name != "customer_page"]

    @admin.display(description="customer page")
    def customer_page(self, obj):
        return format_html('<a href="{}">Open</a>', reverse("admin:auth_user_customer", args=[obj.pk]))

    def get_urls(self):
        view = self.admin_site.admin_view
        customer = "<int:user_id>/customer/"
        subscription = customer + "subscription/<uuid:subscription_id>/"
        return [
            path("find/", view(customer_console.customer_search_view), name="auth_user_customer_search"),
            path(customer, view(customer_console.customer_view), name="auth_user_customer"),
            path(customer + "grant/", view(customer_console.grant_view), name="auth_user_customer_grant"),
            path(
                subscription + "change-tier/",
                view(customer_console.tier_change_view),
                name="auth_user_customer_tier_change",
            ),
            path(subscription + "cancel/", view(customer_console.cancel_view), name="auth_user_customer_cancel"),
            path(
                subscription + "trial-reminder/",
                view(customer_console.trial_reminder_view),
                name="auth_user_customer_trial_reminder",
            ),
            path(
                customer + "license/<uuid:license_id>/suspend/",
                view(customer_console.license_suspend_view),
                name="auth_user_customer_license_suspend",
            ),
            *super().get_urls(),
        ]

    search_fields = ("email", "username", "first_name", "last_name")

    def has_change_permission(self, request, obj=None):
        # Changing a superuser (their password among it) is changing who holds every power.
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and (obj.is_superuser or obj.pk == request.user.pk):
            return False
        return super().has_delete_permission(request, obj)

    def has_export_permission(self, request):
        return request.user.has_perm("auth.export_user")

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        return readonly if request.user.is_superuser else (*readonly, "is_superuser")

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
    """Revoked refresh tokens: revoking (adding) or un-revoking (deleting) a session is audited."""


def _revoke_refresh_tokens(*, request, obj, reason):
    refresh_token_revoke(token=obj, actor=request.user, reason=reason)
    return f"revoked {obj.jti[:8]}… of {obj.user}"


revoke_refresh_tokens = form_action(
    form_class=ReasonForm,
    description="Revoke the selected API sessions (refresh tokens)",
    perform=_revoke_refresh_tokens,
    name="revoke_refresh_tokens",
    permissions=["revoke"],
)


class OutstandingTokenAdmin(ReadOnlyModelAdmin):
    """Issued refresh tokens, i.e. API sessions: who, when, until when, revoked or not. The token
    itself is a credential and is never shown."""

    list_display = ("jti", "user", "created_at", "expires_at", "revoked")
    list_select_related = ("user",)
    search_fields = ("user__email", "=jti")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    fields = ("jti", "user", "created_at", "expires_at")
    actions = [revoke_refresh_tokens]

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(is_revoked=Exists(BlacklistedToken.objects.filter(token=OuterRef("pk"))))
        )

    @admin.display(boolean=True, ordering="is_revoked")
    def revoked(self, obj):
        return obj.is_revoked

    def has_revoke_permission(self, request):
        return request.user.has_perm("token_blacklist.add_blacklistedtoken")


class OwnerEnrolledDeviceAdmin:
    """A second factor is enrolled by its owner only, on the two-factor page: one added or edited
    here would be known to whoever typed it. Staff may delete one (a lost phone), and its owner
    enrols again."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class TOTPDeviceAdmin(OwnerEnrolledDeviceAdmin, AdminAuditMixin, OtpTOTPDeviceAdmin):
    """Authenticators; audited."""


class StaticDeviceAdmin(OwnerEnrolledDeviceAdmin, AdminAuditMixin, OtpStaticDeviceAdmin):
    """Recovery codes (never shown once issued); audited."""


class AccessAttemptAdmin(AdminAuditMixin, AxesAccessAttemptAdmin):
    """Failed sign-ins; deleting an attempt lifts its lockout, audited."""


for model, model_admin in (
    (Group, GroupAdmin),
    (BlacklistedToken, BlacklistedTokenAdmin),
    (OutstandingToken, OutstandingTokenAdmin),
    (TOTPDevice, TOTPDeviceAdmin),
    (StaticDevice, StaticDeviceAdmin),
    (AccessAttempt, AccessAttemptAdmin),
):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyModelAdmin):
    """Stored responses of keyed POSTs. The key and the body would let a caller's response be
    replayed or read: the key is cut short, secrets and license keys in the body are masked."""

    list_display = ("created_at", "caller", "path", "masked_key", "status_code")
    list_filter = ("status_code",)
    search_fields = ("caller", "path", "=key")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    fields = ("created_at", "caller", "path", "masked_key", "status_code", "content_type", "masked_response_body")

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    @admin.display(description="key")
    def masked_key(self, obj):
        return mask_secret(obj.key)

    @admin.display(description="response body")
    def masked_response_body(self, obj):
        try:
            body = json.loads(obj.response_body)
        except ValueError:
            return "(not JSON: not shown)" if obj.response_body else ""
        return json.dumps(redact(body), indent=2)


def _revoke_service_tokens(*, request, obj, reason):
    service_token_revoke(token_id=obj.pk, actor=request.user, reason=reason)
    return f"revoked {obj}"


revoke_service_tokens = form_action(
    form_class=ReasonForm,
    description="Revoke the selected service tokens",
    perform=_revoke_service_tokens,
    name="revoke_service_tokens",
    permissions=["revoke"],
)


@admin.register(ServiceToken)
class ServiceTokenAdmin(ReadOnlyModelAdmin):
    """Issued service tokens (`manage.py issue_service_token`); only their records exist here."""

    list_display = ("id", "service", "scopes", "key_id", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("service", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("service", "=id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = [revoke_service_tokens]

    def has_revoke_permission(self, request):
        return request.user.has_perm("billing_project.revoke_servicetoken")


def _revoke_staff_sessions(*, request, obj, reason):
    staff_session_revoke(staff_session=obj, actor=request.user, reason=reason)
    return f"ended {obj}"


revoke_staff_sessions = form_action(
    form_class=ReasonForm,
    description="End the selected console sessions",
    perform=_revoke_staff_sessions,
    name="revoke_staff_sessions",
    permissions=["revoke"],
)


@admin.register(StaffSession)
class StaffSessionAdmin(ReadOnlyModelAdmin):
    """Console sign-ins of staff: where from, since when, and whether still live."""

    list_display = ("user", "created_at", "ip_address", "user_agent", "live", "ended_at", "revoked_by")
    list_filter = (("ended_at", admin.EmptyFieldListFilter),)
    list_select_related = ("user", "revoked_by")
    search_fields = ("user__email", "user__username", "ip_address")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    exclude = ("session_key",)
    actions = [revoke_staff_sessions]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields if field.name != "session_key"]

    def get_queryset(self, request):
        live_session = Session.objects.filter(session_key=OuterRef("session_key"), expire_date__gt=timezone.now())
        return super().get_queryset(request).annotate(is_live=Exists(live_session))

    @admin.display(boolean=True, ordering="is_live")
    def live(self, obj):
        return obj.ended_at is None and obj.is_live

    def has_revoke_permission(self, request):
        return request.user.has_perm("billing_project.change_staffsession")


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


# The periodic jobs and their results (in place of the stock pages), and the outbound webhooks.
import billing_project.admin_schedules  # noqa: E402
import billing_project.admin_webhooks  # noqa: E402, F401
