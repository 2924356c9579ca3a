from drf_spectacular.utils import extend_schema
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_project.auth import HasStaffPermission, NoAuthentication
from billing_project.email_verification import email_is_verified
from billing_project.errors import NotFound
from billing_project.net import client_info
from billing_project.throttles import ScopedRateThrottle
from billing_project.verification_views import verification_link_template
from payments.api.serializers import OperationStateOutput
from subscriptions import selectors, services
from subscriptions.api.filters import StaffSubscriptionFilter
from subscriptions.api.serializers import (
    AccountOutput,
    CancelInput,
    EntitlementsOutput,
    InvoiceOutput,
    MeOutput,
    RefundInput,
    RegisterInput,
    StaffSubscriptionOutput,
    StartInput,
    StartOutput,
    StatusChangeInput,
    SubscriptionOutput,
    TierChangeInput,
    TierChangeOutput,
    TierChangePreviewOutput,
    TierOutput,
)
from subscriptions.codes import ErrorCode
from subscriptions.models import BillingInvoice, ProrationStatus, Subscription


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class RegisterView(APIView):
    authentication_classes = [NoAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(request=RegisterInput, responses={201: AccountOutput}, auth=[])
    def post(self, request):
        user = services.account_register(
            **_valid(RegisterInput, request.data), verification_link=verification_link_template(request)
        )
        return Response(AccountOutput(user).data, status=status.HTTP_201_CREATED)


class MeView(APIView):
    @extend_schema(responses=MeOutput)
    def get(self, request):
        user = request.user
        me = {
            "id": user.pk,
            "email": user.email,
            "tier": selectors.user_tier(user=user),
            "email_verified": email_is_verified(user=user),
        }
        return Response(MeOutput(me).data)


@extend_schema(auth=[])
class TierListView(generics.ListAPIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    serializer_class = TierOutput

    def get_queryset(self):
        return selectors.tier_list_active()


class SubscriptionStartView(APIView):
    """Starts a paid tier: 201 with the trial (tiers with trial days, once per user), or with the
    checkout: its URL to pay at (Stripe), or the active subscription (offline provider). A user in
    a trial of the tier starts the checkout that converts it. 409 `subscription_exists` when a paid
    subscription is live (change its tier instead). 503 `payment_provider_unavailable` when Stripe
    did not answer: the same request again gets the same checkout."""

    calls_payment_provider = True

    @extend_schema(request=StartInput, responses={201: StartOutput})
    def post(self, request):
        data = _valid(StartInput, request.data)
        started = services.subscription_start(
            user=request.user,
            tier=data["tier"],
            billing_cycle=data["billing_cycle"],
            coupon_code=data["coupon_code"],
            client=client_info(request, device_fingerprint=data["device_fingerprint"]),
        )
        return Response(StartOutput(started).data, status=status.HTTP_201_CREATED)


class TierChangePreviewView(APIView):
    """The numbers `change-tier` would apply now. Changes nothing."""

    @extend_schema(request=TierChangeInput, responses={200: TierChangePreviewOutput})
    def post(self, request, subscription_id):
        quote = services.tier_change_preview(
            subscription_id=subscription_id, user=request.user, **_valid(TierChangeInput, request.data)
        )
        return Response(TierChangePreviewOutput(quote).data)


class TierChangeView(APIView):
    """Upgrades apply now (the net charge collected, the prorated credits granted); downgrades are
    scheduled for the period end. 202 while the upgrade's payment is in flight (an asynchronous
    method, or a card waiting for the customer): the change applies when it succeeds. 402
    `payment_declined` leaves everything as it was; 503 `payment_provider_unavailable` means the
    payment's outcome is not known yet: the same request again resumes it (never charges twice);
    409 `payment_in_progress` while the payment of another change is unfinished."""

    calls_payment_provider = True

    @extend_schema(request=TierChangeInput, responses={200: TierChangeOutput, 202: TierChangeOutput})
    def post(self, request, subscription_id):
        change = services.tier_change(
            subscription_id=subscription_id, user=request.user, **_valid(TierChangeInput, request.data)
        )
        event = change.event
        body = {"subscription": event.subscription, "proration": event, "payment": change.payment}
        waiting = change.payment is not None and event.status == ProrationStatus.PENDING
        return Response(TierChangeOutput(body).data, status=status.HTTP_202_ACCEPTED if waiting else status.HTTP_200_OK)


class SubscriptionCancelView(APIView):
    """Cancels at the period end (a trial at its end); staff may pass `immediately`."""

    @extend_schema(request=CancelInput, responses={200: SubscriptionOutput})
    def post(self, request, subscription_id):
        subscription = services.subscription_cancel(
            subscription_id=subscription_id, user=request.user, **_valid(CancelInput, request.data)
        )
        return Response(SubscriptionOutput(subscription).data)


class MySubscriptionView(APIView):
    @extend_schema(responses={200: SubscriptionOutput})
    def get(self, request):
        subscription = selectors.subscription_live_for(user=request.user)
        if subscription is None:
            raise NotFound("There is no live subscription.", code=ErrorCode.NO_SUBSCRIPTION)
        return Response(SubscriptionOutput(subscription).data)


class MyEntitlementsView(APIView):
    """What the caller may use now, answered from the cache (every change invalidates it)."""

    @extend_schema(responses={200: EntitlementsOutput})
    def get(self, request):
        return Response(EntitlementsOutput(selectors.entitlements_for(user=request.user)).data)


class MyInvoiceListView(generics.ListAPIView):
    serializer_class = InvoiceOutput

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no signed-in user
            return BillingInvoice.objects.none()
        return selectors.invoices_for(user=self.request.user)


class StaffSubscriptionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Staff: list (filters status, tier, billing_cycle, user, email), retrieve, and `change-status`
    along the state machine with a reason (409 `invalid_transition` otherwise); audited."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["subscriptions.view_subscription"],
        "retrieve": ["subscriptions.view_subscription"],
        "change_status": ["subscriptions.change_subscription"],
    }
    serializer_class = StaffSubscriptionOutput
    filterset_class = StaffSubscriptionFilter
    queryset = Subscription.objects.none()
    lookup_value_regex = "[0-9a-fA-F-]{36}"

    def get_queryset(self):
        return selectors.subscriptions_for_staff()

    @extend_schema(request=StatusChangeInput, responses={200: StaffSubscriptionOutput})
    @action(detail=True, methods=["post"], url_path="change-status")
    def change_status(self, request, pk=None):
        subscription = services.subscription_status_change(
            subscription_id=pk, actor=request.user, **_valid(StatusChangeInput, request.data)
        )
        return Response(StaffSubscriptionOutput(subscription).data)


class StaffPaymentRefundView(APIView):
    """Staff: refund a payment (an invoice's payment, or a credit purchase: the `payments.Payment` of a
    pack or an auto-recharge, whose credits are taken back as far as they are left), fully (no amount)
    or partly, with a reason; audited. 200 with the refund's operation (`succeeded`, or `submitted`
    while Stripe processes it); 409 `payment_not_refundable`; 422 `refund_amount_invalid`; 503 when
    Stripe did not answer (the same request again resumes the same refund, never a second one)."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {"post": ["subscriptions.refund_payment"]}
    calls_payment_provider = True

    @extend_schema(request=RefundInput, responses={200: OperationStateOutput})
    def post(self, request, payment_id):
        operation = services.payment_refund(
            payment_id=payment_id, actor=request.user, **_valid(RefundInput, request.data)
        )
        return Response(OperationStateOutput(operation).data)
