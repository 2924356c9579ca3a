from django import forms
from django.contrib import admin

from audit.admin_base import AuditedModelAdmin
from audit.redaction import mask_license_key
from billing_project.admin_actions import ReasonForm, form_action
from billing_project.roles import FULL_LICENSE_KEY_PERMISSION
from licensing import services
from licensing.models import LicenseActivation, PerpetualLicense, VersionUpgrade


def _status_change(service, verb: str):
    def perform(*, request, obj, reason):
        service(license_id=obj.pk, actor=request.user, reason=reason)
        return f"{verb} {mask_license_key(obj.license_key)}"

    return perform


suspend_licenses = form_action(
    form_class=ReasonForm,
    description="Suspend the selected licenses",
    perform=_status_change(services.license_suspend, "suspended"),
    name="suspend_licenses",
    permissions=["change"],
)
reactivate_licenses = form_action(
    form_class=ReasonForm,
    description="Reactivate the selected suspended licenses",
    perform=_status_change(services.license_reactivate, "reactivated"),
    name="reactivate_licenses",
    permissions=["change"],
)
revoke_licenses = form_action(
    form_class=ReasonForm,
    description="Revoke the selected licenses and deactivate their devices",
    perform=_status_change(services.license_revoke, "revoked"),
    name="revoke_licenses",
    permissions=["change"],
)


class LicenseIssueForm(forms.ModelForm):
    """The console's add form: what staff choose; the key, coverage and status come from license_issue."""

    class Meta:
        model = PerpetualLicense
        fields = ("user", "purchased_version", "purchase_price_usd", "max_activations", "byok_enabled")
        help_texts = {
            "purchased_version": "Empty for the release on sale. Covers its whole major line.",
            "purchase_price_usd": "What was paid outside the checkout; 0 for a goodwill license.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["purchased_version"].required = False
        self.fields["purchase_price_usd"].initial = 0


@admin.register(PerpetualLicense)
class PerpetualLicenseAdmin(AuditedModelAdmin):
    """Keys are masked everywhere here; the change page shows a key whole only to staff with
    `licensing.view_full_license_key`, and each such view is an audited read. Adding issues a
    license through the service; status changes only through the audited actions."""

    list_display = (
        "masked_license_key",
        "user",
        "status",
        "byok_enabled",
        "purchased_version",
        "eligible_until_version",
        "max_activations",
        "purchase_price_usd",
        "acquisition_coupon_code",
        "activated_at",
    )
    list_filter = ("status", "byok_enabled")
    list_select_related = ("user",)
    search_fields = ("license_key", "user__email", "acquisition_coupon_code")
    date_hierarchy = "created_at"
    autocomplete_fields = ("user",)
    readonly_fields = ("created_at", "updated_at")
    actions = [suspend_licenses, reactivate_licenses, revoke_licenses]

    @admin.display(description="license key", ordering="license_key")
    def masked_license_key(self, obj):
        return mask_license_key(obj.license_key)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = LicenseIssueForm
            kwargs["fields"] = LicenseIssueForm.Meta.fields
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return LicenseIssueForm.Meta.fields
        fields = super().get_fields(request, obj)
        if self._reveals_keys(request):
            return fields
        return ["masked_license_key" if field == "license_key" else field for field in fields]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        # An issued key is in the customer's hands: changing it would lock them out. The status
        # changes only through the actions, which take a reason and apply their effects.
        key = "license_key" if self._reveals_keys(request) else "masked_license_key"
        return (key, "status", "status_reason", "checkout_session_id", *self.readonly_fields)

    def _reveals_keys(self, request) -> bool:
        return request.user.has_perm(FULL_LICENSE_KEY_PERMISSION)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        response = super().change_view(request, object_id, form_url, extra_context)
        if request.method == "GET" and response.status_code == 200 and self._reveals_keys(request):
            services.full_keys_shown(license_ids=[object_id])
        return response

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = services.license_issue(
            user=obj.user,
            actor=request.user,
            purchased_version=obj.purchased_version or None,
            purchase_price_usd=obj.purchase_price_usd,
            max_activations=obj.max_activations,
            byok_enabled=obj.byok_enabled,
        )
        # The admin goes on with `obj` (its message, log entry and redirect): make it the issued row.
        for field in PerpetualLicense._meta.concrete_fields:
            setattr(obj, field.attname, getattr(issued, field.attname))
        obj._state.adding = False


@admin.register(LicenseActivation)
class LicenseActivationAdmin(AuditedModelAdmin):
    list_display = (
        "license",
        "device_name",
        "os_type",
        "app_version",
        "activated_at",
        "last_seen_at",
        "deactivated_at",
    )
    list_filter = ("os_type", ("deactivated_at", admin.EmptyFieldListFilter))
    list_select_related = ("license",)
    search_fields = ("license__license_key", "license__user__email", "device_fingerprint", "device_name")
    date_hierarchy = "activated_at"
    autocomplete_fields = ("license",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(VersionUpgrade)
class VersionUpgradeAdmin(AuditedModelAdmin):
    list_display = (
        "license",
        "from_version",
        "to_version",
        "upgrade_price_usd",
        "discount_usd",
        "status",
        "purchased_at",
    )
    list_filter = ("status", "to_version")
    list_select_related = ("license",)
    search_fields = ("license__license_key", "license__user__email")
    date_hierarchy = "created_at"
    autocomplete_fields = ("license",)
    readonly_fields = ("created_at", "updated_at")
