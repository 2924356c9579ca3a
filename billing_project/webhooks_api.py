"""Staff API of the outbound webhooks: endpoints (the secret in full only in the creation's answer),
each endpoint's delivery log, and resending a delivery. DELETE disables (the log stays). Every write
is audited by the service it calls."""

import django_filters
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from audit.redaction import mask_secret
from billing_project.auth import HasStaffPermission
from billing_project.fields import DateTimeField
from billing_project.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from billing_project.webhook_endpoints import (
    EVENT_TYPE_CHOICES,
    deliveries_of_endpoint,
    delivery_resend,
    endpoint_create,
    endpoint_disable,
    endpoint_enable,
    endpoint_update,
    endpoints_for_staff,
)

UUID_PATTERN = "[0-9a-fA-F-]{36}"


class EndpointInput(serializers.Serializer):
    url = serializers.URLField(max_length=500)
    description = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPE_CHOICES),
        required=False,
        default=list,
        help_text="Event types or families ('credits'); empty: every event.",
    )


class EndpointUpdateInput(EndpointInput):
    url = serializers.URLField(max_length=500, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    event_types = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPE_CHOICES), required=False)


class EndpointOutput(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    description = serializers.CharField()
    event_types = serializers.ListField(child=serializers.CharField())
    is_active = serializers.BooleanField()
    secret_hint = serializers.SerializerMethodField(help_text="The secret's first characters, to tell two apart.")
    failing_since = DateTimeField(allow_null=True)
    disabled_at = DateTimeField(allow_null=True)
    disabled_reason = serializers.CharField()
    created_at = DateTimeField()
    updated_at = DateTimeField()

    def get_secret_hint(self, endpoint) -> str:
        return mask_secret(endpoint.secret, shown=10)


class CreatedEndpointOutput(EndpointOutput):
    secret = serializers.CharField(help_text="The signing secret, in full in this answer only.")


class DeliveryOutput(serializers.Serializer):
    id = serializers.UUIDField()
    webhook_id = serializers.UUIDField(source="event_id", help_text="The event's id, sent as webhook-id.")
    event_type = serializers.CharField(source="event.type")
    subject = serializers.CharField(source="event.subject")
    status = serializers.ChoiceField(choices=DeliveryStatus.choices)
    attempts = serializers.IntegerField()
    next_attempt_at = DateTimeField(allow_null=True)
    last_attempt_at = DateTimeField(allow_null=True)
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    delivered_at = DateTimeField(allow_null=True)
    created_at = DateTimeField()


class DeliveryFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)

    class Meta:
        model = WebhookDelivery
        fields = ["status"]


class EndpointFilter(django_filters.FilterSet):
    is_active = django_filters.BooleanFilter()

    class Meta:
        model = WebhookEndpoint
        fields = ["is_active"]


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class StaffWebhookEndpointViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Staff: outbound webhook endpoints (filter is_active) and their delivery logs (filter status)."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["billing_project.view_webhookendpoint"],
        "retrieve": ["billing_project.view_webhookendpoint"],
        "create": ["billing_project.add_webhookendpoint"],
        "update": ["billing_project.change_webhookendpoint"],
        "partial_update": ["billing_project.change_webhookendpoint"],
        "destroy": ["billing_project.delete_webhookendpoint"],
        "enable": ["billing_project.change_webhookendpoint"],
        "deliveries": ["billing_project.view_webhookdelivery"],
        "resend": ["billing_project.change_webhookdelivery"],
    }
    serializer_class = EndpointOutput
    filterset_class = EndpointFilter
    queryset = endpoints_for_staff()
    lookup_value_regex = UUID_PATTERN

    @extend_schema(request=EndpointInput, responses={201: CreatedEndpointOutput})
    def create(self, request):
        endpoint = endpoint_create(actor=request.user, **_valid(EndpointInput, request.data))
        return Response(CreatedEndpointOutput(endpoint).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=EndpointUpdateInput, responses={200: EndpointOutput})
    def partial_update(self, request, pk=None):
        endpoint = endpoint_update(endpoint_id=pk, actor=request.user, **_valid(EndpointUpdateInput, request.data))
        return Response(EndpointOutput(endpoint).data)

    @extend_schema(request=EndpointUpdateInput, responses={200: EndpointOutput})
    def update(self, request, pk=None):
        return self.partial_update(request, pk=pk)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        endpoint_disable(endpoint_id=pk, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: EndpointOutput})
    @action(detail=True, methods=["post"])
    def enable(self, request, pk=None):
        return Response(EndpointOutput(endpoint_enable(endpoint_id=pk, actor=request.user)).data)

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=DeliveryStatus.values)],
        responses={200: DeliveryOutput(many=True)},
    )
    @action(detail=True, methods=["get"], serializer_class=DeliveryOutput, filterset_class=None)
    def deliveries(self, request, pk=None):
        filtered = DeliveryFilter(request.query_params, queryset=deliveries_of_endpoint(endpoint_id=pk))
        if not filtered.is_valid():
            raise ValidationError(filtered.errors)
        page = self.paginate_queryset(filtered.qs)
        return self.get_paginated_response(DeliveryOutput(page, many=True).data)

    @extend_schema(request=None, responses={200: DeliveryOutput})
    @action(
        detail=True,
        methods=["post"],
        url_path=f"deliveries/(?P<delivery_id>{UUID_PATTERN})/resend",
        serializer_class=DeliveryOutput,
        filterset_class=None,
    )
    def resend(self, request, pk=None, delivery_id=None):
        delivery = delivery_resend(delivery_id=delivery_id, endpoint_id=pk, actor=request.user)
        return Response(DeliveryOutput(deliveries_of_endpoint(endpoint_id=pk).get(pk=delivery.pk)).data)
