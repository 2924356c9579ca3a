"""The console's customer page: one user's account, subscription, credits, usage, licenses, coupons,
invoices, payments and audit trail, with the actions support takes on them one click away. Each
action calls the service the API and the admin actions call (which audits it) and needs the
permission that service's admin action needs. Like the dashboard it sits on top of every app."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from audit.redaction import mask_license_key
from billing_project.admin_actions import ReasonForm
from billing_project.admin_site import may_open_customer_page
from billing_project.customer_selectors import customer_page, customers_matching
from billing_project.errors import DomainError
from credits.admin import GrantCreditsForm
from credits.services import credit_grant_by_staff
from licensing.models import PerpetualLicense
from licensing.services import license_suspend
from subscriptions.models import Subscription, SubscriptionTier
from subscriptions.services import subscription_cancel, tier_change, tier_change_preview, trial_reminder_resend

AUDIT_PERMISSION = "audit.view_adminauditlog"
GRANT_PERMISSION = "credits.grant_credits"
SUBSCRIPTION_PERMISSION = "subscriptions.change_subscription"
LICENSE_PERMISSION = "licensing.change_perpetuallicense"


# Far enough back for any customer, short of an offset that makes the database walk the whole table.
MAX_AUDIT_PAGE = 1000

# The tiers a subscription changes to (free is reached by cancelling; perpetual is a license).
NOT_CHANGEABLE = (SubscriptionTier.FREE, SubscriptionTier.PERPETUAL)
CHANGEABLE_TIERS = [(tier.value, tier.label) for tier in SubscriptionTier if tier not in NOT_CHANGEABLE]


class TierForm(forms.Form):
    tier = forms.ChoiceField(choices=CHANGEABLE_TIERS)


class CancelForm(ReasonForm):
    immediately = forms.BooleanField(
        required=False, help_text="Now, back to the free tier; otherwise at the end of the period."
    )


def _require(request, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


def _page_url(user_id) -> str:
    return reverse("admin:auth_user_customer", args=[user_id])


def _customer(user_id):
    return get_object_or_404(get_user_model(), pk=user_id)


def _page_number(value) -> int:
    """A page number from the query string; anything else is the first page."""
    return int(value) if value and value.isdigit() and 0 < int(value) <= MAX_AUDIT_PAGE else 1


def customer_view(request, user_id):
    if not may_open_customer_page(request.user):
        raise PermissionDenied
    try:
        page = customer_page(
            user_id=user_id,
            include_audit=request.user.has_perm(AUDIT_PERMISSION),
            audit_page=_page_number(request.GET.get("audit_page")),
        )
    except get_user_model().DoesNotExist as missing:
        raise Http404("No such user.") from missing
    context = {
        **_site_context(request),
        "title": f"Customer {page.user.email or page.user.get_username()}",
        "page": page,
        "licenses": [(license_, mask_license_key(license_.license_key)) for license_ in page.licenses],
        "grant_form": GrantCreditsForm(),
        "tier_form": TierForm(),
        "cancel_form": CancelForm(),
        "may_grant": request.user.has_perm(GRANT_PERMISSION),
        "may_change_subscription": request.user.has_perm(SUBSCRIPTION_PERMISSION),
        "may_change_license": request.user.has_perm(LICENSE_PERMISSION),
        "media": GrantCreditsForm().media,
    }
    return TemplateResponse(request, "admin/customer.html", context)


def customer_search_view(request):
    """The index's search box: one match opens its page, several are listed."""
    if not may_open_customer_page(request.user):
        raise PermissionDenied
    query = request.GET.get("q", "")
    matches = customers_matching(query=query)
    if len(matches) == 1:
        return redirect(_page_url(matches[0].pk))
    context = {**_site_context(request), "title": "Find a customer", "query": query, "matches": matches}
    return TemplateResponse(request, "admin/customer_search.html", context)


def _outcome(request, user_id, action):
    """Runs a service call; a refusal becomes an error message on the customer page."""
    try:
        message = action()
    except DomainError as refused:
        messages.error(request, f"Refused: {refused.detail}")
    else:
        messages.success(request, message)
    return redirect(_page_url(user_id))


def _form_errors(request, user_id, form):
    errors = "; ".join(f"{name}: {' '.join(texts)}" for name, texts in form.errors.items())
    messages.error(request, f"Not done: {errors}")
    return redirect(_page_url(user_id))


@require_POST
def grant_view(request, user_id):
    _require(request, GRANT_PERMISSION)
    customer = _customer(user_id)
    form = GrantCreditsForm(request.POST)
    if not form.is_valid():
        return _form_errors(request, user_id, form)

    def grant():
        result = credit_grant_by_staff(user=customer, actor=request.user, **form.cleaned_data)
        return f"Granted {form.cleaned_data['amount']} credits; balance {result.balance_after}."

    return _outcome(request, user_id, grant)


def _subscription_of(user_id, subscription_id) -> Subscription:
    return get_object_or_404(Subscription, pk=subscription_id, user_id=user_id)


def tier_change_view(request, user_id, subscription_id):
    """GET shows what the change would do now (the service's own preview); POST applies it."""
    _require(request, SUBSCRIPTION_PERMISSION)
    subscription = _subscription_of(user_id, subscription_id)
    form = TierForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
        return _form_errors(request, user_id, form)
    tier = form.cleaned_data["tier"]
    if request.method == "POST":

        def change():
            event = tier_change(subscription_id=subscription.pk, user=request.user, tier=tier).event
            return f"Tier change to {tier}: {event.change_type} {event.status}, net charge USD {event.net_charge_usd}."

        return _outcome(request, user_id, change)
    try:
        quote = tier_change_preview(subscription_id=subscription.pk, user=request.user, tier=tier)
    except DomainError as refused:
        messages.error(request, f"Refused: {refused.detail}")
        return redirect(_page_url(user_id))
    context = {
        **_site_context(request),
        "title": f"Change {subscription.user.email} from {subscription.tier} to {tier}",
        "customer": subscription.user,
        "subscription": subscription,
        "tier": tier,
        "quote": quote,
    }
    return TemplateResponse(request, "admin/customer_tier_change.html", context)


@require_POST
def cancel_view(request, user_id, subscription_id):
    _require(request, SUBSCRIPTION_PERMISSION)
    subscription = _subscription_of(user_id, subscription_id)
    form = CancelForm(request.POST)
    if not form.is_valid():
        return _form_errors(request, user_id, form)

    def cancel():
        cancelled = subscription_cancel(subscription_id=subscription.pk, user=request.user, **form.cleaned_data)
        when = "at the end of the period" if cancelled.cancel_at_period_end else "now"
        return f"Subscription cancelled {when} ({cancelled.status})."

    return _outcome(request, user_id, cancel)


@require_POST
def trial_reminder_view(request, user_id, subscription_id):
    _require(request, SUBSCRIPTION_PERMISSION)
    subscription = _subscription_of(user_id, subscription_id)

    def resend():
        days_left = trial_reminder_resend(subscription_id=subscription.pk, actor=request.user)
        return f"Trial reminder sent ({days_left} days left)."

    return _outcome(request, user_id, resend)


@require_POST
def license_suspend_view(request, user_id, license_id):
    _require(request, LICENSE_PERMISSION)
    license_ = get_object_or_404(PerpetualLicense, pk=license_id, user_id=user_id)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        return _form_errors(request, user_id, form)

    def suspend():
        license_suspend(license_id=license_.pk, actor=request.user, reason=form.cleaned_data["reason"])
        return "License suspended."

    return _outcome(request, user_id, suspend)


def _site_context(request) -> dict:
    return admin.site.each_context(request)
