import orjson
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.context import audit_status_expected
from billing_project.auth import HasStaffPermission, NoAuthentication
from payments import selectors
from payments.api.filters import PaymentEventFilter, PaymentOperationFilter
from payments.api.serializers import (
    OfflinePortalOutput,
    PaymentEventOutput,
    PaymentOperationOutput,
    PortalSessionOutput,
    UnmatchedWebhookEventOutput,
    WebhookOutput,
)
from payments.models import PaymentEvent, PaymentOperation, WebhookEvent, WebhookStatus
from payments.services.inbox import WebhookProcessingFailed, webhook_receive, webhook_replay
from payments.services.portal import billing_portal_session_create
from payments.services.reconcile import operation_reconcile


class JSONAnswer(DefaultContentNegotiation):
    """Stripe reads the status code only; whatever its Accept header says (`*/*; q=0.5,
    application/xml`, which the API's usual-header shortcut does not cover), the answer is JSON.
    Parsing that header was a tenth of a redelivery's time (bench/webhooks_cpu.py --replay --profile)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class StripeWebhookView(APIView):
    """Stripe's events, verified by their signature on the raw body (no other authentication).
    200 with the stored result, also for a replayed event; 400 `invalid_signature`; 500 when a
    handler failed (the event is kept with its error, and Stripe delivers it again)."""

    authentication_classes = [NoAuthentication]
    permission_classes = [AllowAny]
    content_negotiation_class = JSONAnswer

    def dispatch(self, request, *args, **kwargs):
        """A POST goes straight to `post`, its errors through DRF's exception handler (the same
        problem+json): with nothing to authenticate, permit, throttle or parse, DRF's request wrapping
        was a tenth of a redelivery's CPU (bench/webhooks_cpu.py --replay). Other methods take DRF's way."""
        if request.method != "POST":
            return super().dispatch(request, *args, **kwargs)
        self.args, self.kwargs, self.request = args, kwargs, request
        try:
            return self.post(request)
        except Exception as exc:
            self.request = self.initialize_request(request, *args, **kwargs)
            self.headers = self.default_response_headers
            return self.finalize_response(self.request, self.handle_exception(exc), *args, **kwargs)

    @extend_schema(request=None, responses={200: WebhookOutput}, auth=[])
    def post(self, request):
        # Stored events are answered 200 (a failed one's rows are rolled back): the audit rows take it as written.
        audit_status_expected(200)
        # META rather than request.headers, which copies every header first.
        event, replayed = webhook_receive(
            payload=request.body, signature_header=request.META.get("HTTP_STRIPE_SIGNATURE", "")
        )
        if event.status == WebhookStatus.FAILED:
            raise WebhookProcessingFailed(event.error, extra={"event_id": event.event_id})
        # WebhookOutput's fields, all plain JSON values already: no serializer and no renderer on the
        # way (together a fifth of a redelivery's time in the view).
        answer = {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "status": str(event.status),
            "result": event.result,
            "replayed": replayed,
        }
        return HttpResponse(orjson.dumps(answer), content_type="application/json")


class BillingPortalView(APIView):
    """A session of Stripe's customer portal for the caller (update the card, see invoices, cancel):
    200 `{url, provider}`; the caller's Stripe customer is created the first time. 503
    `payment_provider_unavailable` when Stripe did not answer (nothing is written; retry). With the
    offline provider (development) the URL is a local page saying there is no portal."""

    calls_payment_provider = True

    @extend_schema(request=None, responses={200: PortalSessionOutput})
    def post(self, request):
        portal = billing_portal_session_create(user=request.user)
        url = portal.url or request.build_absolute_uri(reverse("billing-portal-offline"))
        return Response(PortalSessionOutput({"url": url, "provider": portal.provider}).data)


@extend_schema(auth=[])
class OfflinePortalView(APIView):
    """Where the portal sends a customer when payments run on the offline provider."""

    authentication_classes = [NoAuthentication]
    permission_classes = [AllowAny]

    @extend_schema(responses={200: OfflinePortalOutput})
    def get(self, request):
        detail = (
            "Payments run on the offline provider (development): there is no customer portal. "
            "Invoices are listed at /api/v1/me/invoices/."
        )
        return Response(OfflinePortalOutput({"provider": "offline", "detail": detail}).data)


class PaymentEventViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [HasStaffPermission]
    staff_permissions = {"list": ["payments.view_paymentevent"], "retrieve": ["payments.view_paymentevent"]}
    serializer_class = PaymentEventOutput
    filterset_class = PaymentEventFilter
    queryset = PaymentEvent.objects.order_by("-created_at")


class PaymentOperationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Staff: every money movement and provider change, with its state (filters user, kind, state,
    created_at). `reconcile` settles one now from what Stripe says of its objects; audited."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["payments.view_paymentoperation"],
        "retrieve": ["payments.view_paymentoperation"],
        "reconcile": ["payments.change_paymentoperation"],
    }
    serializer_class = PaymentOperationOutput
    filterset_class = PaymentOperationFilter
    queryset = PaymentOperation.objects.none()
    lookup_value_regex = "[0-9a-fA-F-]{36}"
    calls_payment_provider = True

    def get_queryset(self):
        return selectors.operations_for_staff()

    @extend_schema(request=None, responses={200: PaymentOperationOutput})
    @action(detail=True, methods=["post"])
    def reconcile(self, request, pk=None):
        return Response(PaymentOperationOutput(operation_reconcile(operation_id=pk, actor=request.user)).data)


class UnmatchedWebhookEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Staff: Stripe events about objects nothing here is linked to (a subscription, customer or
    checkout not known here), with the reason. `reprocess` processes one again once its object is
    known (what it needs is read from Stripe first); audited. The answer is the event as it is now:
    processed, or still unmatched with the reason."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["payments.view_webhookevent"],
        "retrieve": ["payments.view_webhookevent"],
        "reprocess": ["payments.change_webhookevent"],
    }
    serializer_class = UnmatchedWebhookEventOutput
    queryset = WebhookEvent.objects.none()
    lookup_field = "event_id"
    lookup_value_regex = "[A-Za-z0-9_-]+"
    calls_payment_provider = True

    def get_queryset(self):
        return selectors.webhook_events_unmatched()

    @extend_schema(request=None, responses={200: UnmatchedWebhookEventOutput})
    @action(detail=True, methods=["post"])
    def reprocess(self, request, event_id=None):
        self.get_object()
        return Response(UnmatchedWebhookEventOutput(webhook_replay(event_id=event_id, actor=request.user)).data)
