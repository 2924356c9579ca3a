"""Helpers for tests that drive the staff console's admin pages."""

from django.urls import reverse


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def change_form_data(response) -> dict:
    """What a change form posts when nothing is edited (for forms without split or multi-value widgets)."""
    form = response.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is None or value is False:  # an empty field; an unticked checkbox sends nothing
            continue
        data[name] = value
    return data
