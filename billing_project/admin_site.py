"""The console's admin site: Django's, with a second factor for staff and their enrolment page.

Sign-in takes the password and, for staff who have enrolled an authenticator, its code (or a
recovery code). Where STAFF_2FA_REQUIRED says so, a staff member without an authenticator is
signed in only as far as the enrolment page; every other page waits until the session is verified.
"""

from base64 import b32encode

import qrcode
from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django_otp import login as otp_login
from django_otp import match_token, user_has_device
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from qrcode.image.svg import SvgPathFillImage

from billing_project.auth import staff_second_factor_required, staff_second_factor_satisfied
from billing_project.codes import ErrorCode
from billing_project.signin import (
    authenticator_confirm,
    authenticator_pending,
    recovery_codes_replace,
    sign_in_failed,
)


class ConsoleLoginForm(AdminAuthenticationForm):
    otp_token = forms.CharField(
        required=False,
        label="Authenticator code",
        help_text="Staff with an authenticator: its 6-digit code, or one of your recovery codes.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def confirm_login_allowed(self, user):
        try:
            super().confirm_login_allowed(user)
        except ValidationError:
            sign_in_failed(request=self.request, username=user.get_username(), reason="not_staff")
            raise

    def clean(self):
        cleaned = super().clean()
        user = self.user_cache
        if user is not None and user_has_device(user):
            token = (cleaned.get("otp_token") or "").strip()
            device = match_token(user, token) if token else None
            if device is None:
                sign_in_failed(request=self.request, username=user.get_username(), reason="otp_invalid")
                raise ValidationError(
                    "Enter the current code of your authenticator app, or an unused recovery code.",
                    code=ErrorCode.OTP_INVALID,
                )
            # django-otp marks the session verified when the sign-in completes.
            user.otp_device = device
        return cleaned


def second_factor_missing(request) -> bool:
    user = request.user
    return bool(user.is_authenticated and not staff_second_factor_satisfied(user))


class SecondFactorForm(forms.Form):
    otp_token = forms.CharField(
        label="Code", max_length=32, widget=forms.TextInput(attrs={"autocomplete": "one-time-code"})
    )


# The index's sections, by what staff do: a model goes where its own entry says, else where its app's does.
SECTIONS = ("Customers", "Billing", "Credits", "Licensing", "Coupons", "Audit", "System")
SECTION_OF = {
    "auth.user": "Customers",
    "billing_project.verifiedemail": "Customers",
    "subscriptions.userentitlement": "Customers",
    "subscriptions": "Billing",
    "payments": "Billing",
    "credits": "Credits",
    "licensing": "Licensing",
    "coupons": "Coupons",
    "audit": "Audit",
    "auditlog": "Audit",
    "billing_project.staffsession": "Audit",
    "axes": "Audit",
}


# What the page shows needs the view permission of each table it reads (the audit rows are shown
# to those who may read the audit trail).
CUSTOMER_PAGE_PERMISSIONS = (
    "auth.view_user",
    "subscriptions.view_subscription",
    "subscriptions.view_prorationevent",
    "subscriptions.view_billinginvoice",
    "subscriptions.view_paymenttransaction",
    "credits.view_usercreditsource",
    "credits.view_credithold",
    "credits.view_tokenusageledger",
    "credits.view_creditconsumption",
    "licensing.view_perpetuallicense",
    "licensing.view_licenseactivation",
    "coupons.view_couponredemption",
)


def may_open_customer_page(user) -> bool:
    return user.has_perms(CUSTOMER_PAGE_PERMISSIONS)


class ConsoleSite(admin.AdminSite):
    login_form = ConsoleLoginForm
    login_template = "admin/console_login.html"

    def each_context(self, request):
        """Links to the customer page (the index's search box, the user page) show only to staff who may open it."""
        return {**super().each_context(request), "may_open_customer_page": may_open_customer_page(request.user)}

    def get_app_list(self, request, app_label=None):
        """The index and the side menu in sections by what staff do (customers, billing, credits ...)
        instead of one entry per app; an app's own page lists its models as Django does."""
        app_list = super().get_app_list(request, app_label)
        if app_label is not None:
            return app_list
        sections = {name: [] for name in SECTIONS}
        for app in app_list:
            for model_entry in app["models"]:
                label = model_entry["model"]._meta.label_lower
                section = SECTION_OF.get(label) or SECTION_OF.get(app["app_label"], "System")
                sections[section].append(model_entry)
        return [
            {
                "name": name,
                "app_label": name.lower(),
                "app_url": f"#{name.lower()}",
                "has_module_perms": True,
                "models": sorted(models, key=lambda entry: entry["name"]),
            }
            for name, models in sections.items()
            if models
        ]

    def has_permission(self, request):
        return super().has_permission(request) and not second_factor_missing(request)

    def login(self, request, extra_context=None):
        user = request.user
        if request.method == "GET" and user.is_active and user.is_staff and second_factor_missing(request):
            return redirect("admin:second-factor")
        return super().login(request, extra_context)

    def get_urls(self):
        return [
            path("second-factor/", self._signed_in_staff(self.second_factor_view), name="second-factor"),
            *super().get_urls(),
        ]

    def _signed_in_staff(self, view):
        """Signed in as active staff, verified or not: the enrolment page comes before the rest."""

        def inner(request, *args, **kwargs):
            if not (request.user.is_active and request.user.is_staff):
                return redirect_to_login(request.get_full_path(), reverse("admin:login", current_app=self.name))
            return view(request, *args, **kwargs)

        return never_cache(csrf_protect(inner))

    def second_factor_view(self, request):
        """Enrol an authenticator (a QR code, then one code from it), verify this session with one,
        or replace the recovery codes. New recovery codes are shown once."""
        user = request.user
        authenticator = TOTPDevice.objects.filter(user=user, confirmed=True).first()
        form = SecondFactorForm(request.POST or None)
        recovery_codes = None
        if request.method == "POST" and request.POST.get("action") == "recovery_codes":
            if not user.is_verified():
                return redirect("admin:second-factor")
            recovery_codes = recovery_codes_replace(user=user)
        elif request.method == "POST" and form.is_valid():
            token = form.cleaned_data["otp_token"].strip()
            if authenticator is None:
                pending = authenticator_pending(user=user)
                if pending.verify_token(token):
                    authenticator_confirm(device=pending)
                    recovery_codes = recovery_codes_replace(user=user)
                    otp_login(request, pending)
                    authenticator = pending
                else:
                    form.add_error("otp_token", "That code is not the current one of the authenticator.")
            else:
                device = match_token(user, token)
                if device is not None:
                    otp_login(request, device)
                    return redirect("admin:index")
                sign_in_failed(request=request, username=user.get_username(), reason="otp_invalid")
                form.add_error("otp_token", "That code is wrong or was already used.")
        pending = authenticator_pending(user=user) if authenticator is None else None
        context = {
            **self.each_context(request),
            "title": "Two-factor sign-in",
            "form": form,
            "enrolled": authenticator is not None,
            "verified": user.is_verified(),
            "required": staff_second_factor_required(user),
            "recovery_codes": recovery_codes,
            "recovery_codes_left": StaticToken.objects.filter(device__user=user).count(),
            # The SVG is generated here from the device's own URL: no user input reaches it.
            "qr_code": mark_safe(_qr_svg(pending.config_url)) if pending else None,
            "secret": b32encode(pending.bin_key).decode() if pending else None,
        }
        return TemplateResponse(request, "admin/second_factor.html", context)


def _qr_svg(data: str) -> str:
    """An inline SVG (plain <svg>, white background) that any browser draws."""
    return qrcode.make(data, image_factory=SvgPathFillImage).to_string(encoding="unicode")
