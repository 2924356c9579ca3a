"""Outbound webhooks in the console: endpoints (created with a secret shown once, enabled and
disabled through audited actions), the events and the notifications (read-only) and each endpoint's
delivery log with a resend action."""

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from audit.admin_base import AuditedModelAdmin, ReadOnlyModelAdmin
from audit.redaction import mask_secret
from billing_project.errors import DomainError
from billing_project.models import Notification, OutboundEvent, WebhookDelivery, WebhookEndpoint
from billing_project.webhook_delivery import endpoint_secret_generate, endpoint_url_problem
from billing_project.webhook_endpoints import (
    EVENT_TYPE_CHOICES,
    delivery_resend,
    endpoint_disable,
    endpoint_enable,
)


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")
    event_types = forms.MultipleChoiceField(
        choices=[(name, name if "." in name else f"{name} (every {name} event)") for name in EVENT_TYPE_CHOICES],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Event types, or whole families; none checked: every event.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("url", "description", "event_types")

    def clean_url(self):
        url = self.cleaned_data["url"]
        if problem := endpoint_url_problem(url):
            raise forms.ValidationError(problem)
        return url


def _switch(modeladmin, request, queryset, *, service, verb: str):
    done = []
    for endpoint in queryset:
        service(endpoint_id=endpoint.pk, actor=request.user)
        done.append(str(endpoint))
    if done:
        modeladmin.message_user(request, f"{verb}: {', '.join(done)}", messages.SUCCESS)


@admin.action(description="Disable the selected endpoints (their pending deliveries fail)", permissions=["change"])
def disable_endpoints(modeladmin, request, queryset):
    _switch(modeladmin, request, queryset, service=endpoint_disable, verb="Disabled")


@admin.action(description="Enable the selected endpoints", permissions=["change"])
def enable_endpoints(modeladmin, request, queryset):
    _switch(modeladmin, request, queryset, service=endpoint_enable, verb="Enabled")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(AuditedModelAdmin):
    """Receivers of outbound events. The secret is generated at creation and shown once; from then
    on only its first characters. Disabling is an action, so pending deliveries fail with it."""

    form = WebhookEndpointForm
    list_display = ("url", "description", "is_active", "event_types", "failing_since", "disabled_at", "delivery_log")
    list_filter = ("is_active", ("failing_since", admin.EmptyFieldListFilter))
    search_fields = ("url", "description")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = ("masked_secret", "is_active", "failing_since", "disabled_at", "disabled_reason", "delivery_log")
    actions = [disable_endpoints, enable_endpoints]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def get_fields(self, request, obj=None):
        fields = ["url", "description", "event_types"]
        return [*fields, *self.readonly_fields] if obj is not None else fields

    @admin.display(description="secret")
    def masked_secret(self, obj):
        return mask_secret(obj.secret, shown=10)

    @admin.display(description="deliveries")
    def delivery_log(self, obj):
        url = reverse("admin:billing_project_webhookdelivery_changelist") + f"?endpoint__id__exact={obj.pk}"
        return format_html('<a href="{}">Delivery log</a>', url)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.secret = endpoint_secret_generate()
        super().save_model(request, obj, form, change)
        if not change:
            self.message_user(
                request,
                f"The endpoint's signing secret, shown this once (copy it to the receiver): {obj.secret}",
                messages.WARNING,
            )

    def has_delete_permission(self, request, obj=None):
        # Its delivery log stays: an endpoint no longer wanted is disabled.
        return False


@admin.register(OutboundEvent)
class OutboundEventAdmin(ReadOnlyModelAdmin):
    """What the service announced, in the transaction of each change. Append-only."""

    list_display = ("created_at", "type", "subject", "user", "id")
    list_filter = ("type",)
    list_select_related = ("user",)
    search_fields = ("=subject", "=id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(Notification)
class NotificationAdmin(ReadOnlyModelAdmin):
    """Each occurrence told to a person (or to staff), once: its e-mail and its outbound event."""

    list_display = ("created_at", "kind", "user", "occurrence", "emailed_at", "event")
    list_filter = ("kind", ("emailed_at", admin.EmptyFieldListFilter))
    list_select_related = ("user",)
    search_fields = ("user__email", "=occurrence")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.action(description="Resend the selected deliveries now (same webhook-id)", permissions=["resend"])
def resend_deliveries(modeladmin, request, queryset):
    done, refused = [], []
    for delivery in queryset.select_related("event", "endpoint"):
        try:
            delivery_resend(delivery_id=delivery.pk, actor=request.user)
        except DomainError as error:
            refused.append(f"{delivery}: {error.detail}")
        else:
            done.append(str(delivery))
    if done:
        modeladmin.message_user(request, "Resending (same webhook-id): " + "; ".join(done), messages.SUCCESS)
    if refused:
        modeladmin.message_user(request, "Refused: " + "; ".join(refused), messages.ERROR)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyModelAdmin):
    """Each event to each endpoint: its attempts and the last answer. Filter by endpoint for its log."""

    list_display = (
        "created_at",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "last_attempt_at",
        "next_attempt_at",
        "delivered_at",
        "event_id",
    )
    list_filter = ("status", "endpoint")
    list_select_related = ("event", "endpoint")
    search_fields = ("=event__id", "=event__subject")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = [resend_deliveries]

    @admin.display(description="type", ordering="event__type")
    def event_type(self, obj):
        return obj.event.type

    def has_resend_permission(self, request):
        return request.user.has_perm("billing_project.change_webhookdelivery")
