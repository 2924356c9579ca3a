"""Console actions that ask for input first (a reason, an amount) on an intermediate page, then call
a service once per selected row. Refusals are reported per row; what succeeded stays done."""

from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.template.response import TemplateResponse

from billing_project.errors import DomainError


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=1000)


def form_action(
    *,
    form_class: type[forms.Form],
    description: str,
    perform: Callable,
    name: str,
    permissions=None,
    describe: Callable = str,
) -> Callable:
    """An admin action: shows `form_class`, then calls perform(request=, obj=, **cleaned_data) for each
    selected row; perform returns a short text for the success message. `describe(obj)` is how each
    row is shown on the form page (what the action will change)."""

    def action(modeladmin, request, queryset):
        if "apply" in request.POST:
            form = form_class(request.POST)
            if form.is_valid():
                done, refused = [], []
                for obj in queryset:
                    try:
                        done.append(perform(request=request, obj=obj, **form.cleaned_data))
                    except DomainError as error:
                        refused.append(f"{obj}: {error.detail}")
                if done:
                    modeladmin.message_user(request, "; ".join(done), messages.SUCCESS)
                if refused:
                    modeladmin.message_user(request, "Refused: " + "; ".join(refused), messages.ERROR)
                return None
        else:
            form = form_class()
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": description,
            "form": form,
            "objects": queryset,
            "descriptions": [describe(obj) for obj in queryset],
            "media": form.media,
            "action_name": name,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "opts": modeladmin.model._meta,
        }
        return TemplateResponse(request, "admin/action_form.html", context)

    action.__name__ = name
    return admin.action(description=description, permissions=permissions)(action)
