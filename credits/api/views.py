from datetime import timedelta

import orjson
from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_project import codes
from billing_project.auth import (
    ActiveUserTokenAuthentication,
    HasStaffPermission,
    ServiceTokenAuthentication,
    service_scope,
)
from billing_project.errors import DomainError, NotFound
from billing_project.money import minor_to_text
from billing_project.parsers import TEXTS_STORABLE, text_problem
from credits import selectors, services
from credits.api import serializers as s
from credits.api.events import usage_event_parse
from credits.api.filters import StaffDeductionFilter
from credits.codes import ErrorCode
from credits.models import CreditPack, ModelProviderPricing, PricingConfig, Provider
from credits.services import packs

UsageWrite = service_scope("usage:write")
MAX_BATCH = 1000


def _texts_storable(request) -> bool:
    """Whether the parser found every text of the request's body storable (read after its data)."""
    return request.parser_context.get(TEXTS_STORABLE, False)


class UsageRecordView(APIView):
    """Records one LLM request. 201 when recorded, 200 with the first body for a repeated request_id."""

    permission_classes = [UsageWrite]

    @extend_schema(request=s.UsageEventInput, responses={201: s.UsageRecordOutput, 200: s.UsageRecordOutput})
    def post(self, request):
        data = request.data
        event, errors = usage_event_parse(data, texts_storable=_texts_storable(request))
        if errors:
            raise ValidationError(errors)
        result = services.usage_record(event=event)
        return Response(result.body, status=result.status_code)


def _batch_entry(index: int, raw, *, texts_storable: bool) -> tuple[dict, object]:
    """(result skeleton, event or None) for one raw event of a batch."""
    event, errors = usage_event_parse(raw, texts_storable=texts_storable)
    request_id = raw.get("request_id") if isinstance(raw, dict) else None
    # Echoed as sent: only text a response can hold.
    if not isinstance(request_id, str) or (not texts_storable and text_problem(request_id)):
        request_id = None
    if errors:
        return {
            "index": index,
            "request_id": request_id,
            "status": 400,
            "code": codes.ErrorCode.VALIDATION_ERROR,  # the problem code of invalid fields, per event
            "errors": errors,
        }, None
    return {"index": index, "request_id": request_id}, event


class UsageRecordBatchView(APIView):
    """Records up to 1,000 requests; each gets its own result, in order. The response is 200 whatever
    the individual outcomes: read each result's `status`."""

    permission_classes = [UsageWrite]
    items_judged_by_view = "events"

    @extend_schema(request=s.UsageBatchInput, responses=s.UsageBatchOutput)
    def post(self, request):
        events = request.data.get("events") if isinstance(request.data, dict) else None
        if not isinstance(events, list) or not 1 <= len(events) <= MAX_BATCH:
            raise ValidationError({"events": [f"Send a list of 1 to {MAX_BATCH} events."]})
        texts_storable = _texts_storable(request)
        entries = [_batch_entry(index, raw, texts_storable=texts_storable) for index, raw in enumerate(events)]
        valid = [(entry, event) for entry, event in entries if event is not None]
        outcomes = services.usage_record_batch(events=[event for _, event in valid])
        for (entry, _), outcome in zip(valid, outcomes, strict=True):
            if isinstance(outcome, DomainError):
                entry.update(status=outcome.status, code=outcome.code, detail=outcome.detail, **outcome.extra)
            else:
                entry.update(status=outcome.status_code, result=outcome.body)
        return Response({"results": [entry for entry, _ in entries]})


class UsageCheckView(APIView):
    """Pre-flight: would a request of `estimated_credits` be allowed now? Changes nothing."""

    permission_classes = [UsageWrite]

    @extend_schema(request=s.CreditCheckInput, responses=s.CreditCheckOutput)
    def post(self, request):
        data = s.CreditCheckInput(data=request.data)
        data.is_valid(raise_exception=True)
        user_id = data.validated_data["user_id"]
        if not get_user_model().objects.filter(pk=user_id).exists():
            raise NotFound(f"No user with id {user_id}.", code=ErrorCode.UNKNOWN_USER)
        figures = selectors.credits_available(user_id=user_id)
        estimated, budget_available = data.validated_data["estimated_credits"], figures["budget_available"]
        reason = None
        if estimated > figures["available"]:
            reason = ErrorCode.INSUFFICIENT_CREDITS
        elif budget_available is not None and estimated > budget_available:
            reason = ErrorCode.BUDGET_EXCEEDED
        body = {
            "allowed": reason is None,
            "reason": reason,
            "balance": figures["balance"],
            "available": figures["available"],
            "budget_available": budget_available,
        }
        return Response(s.CreditCheckOutput(body).data)


def _hold_body(hold, available=None) -> dict:
    body = {"hold_id": hold.hold_id, "status": hold.status, "held": hold.amount, "expires_at": hold.expires_at}
    if available is not None:
        body["available"] = available
    return s.HoldOutput(body).data


class UsageReserveView(APIView):
    """Holds credits for a streaming call; capture them with `hold_id` on usage/record."""

    permission_classes = [UsageWrite]

    @extend_schema(request=s.HoldReserveInput, responses={201: s.HoldOutput, 200: s.HoldOutput})
    def post(self, request):
        data = s.HoldReserveInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.hold_reserve(**data.validated_data)
        return Response(
            _hold_body(result.hold, result.available),
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class UsageReleaseView(APIView):
    permission_classes = [UsageWrite]

    @extend_schema(request=s.HoldReleaseInput, responses=s.HoldOutput)
    def post(self, request):
        data = s.HoldReleaseInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(_hold_body(services.hold_release(**data.validated_data)))


class MeCreditsView(APIView):
    # The most frequent read of the API: no user query for a user known to be active, the
    # representation's fields built once (a serializer deep-copies its declared fields when made),
    # and the cache keeping the JSON body itself, sent as it is (DRF's renderer and the cache's
    # unpickling of the dict were a twentieth of a hit's time).
    authentication_classes = [ServiceTokenAuthentication, ActiveUserTokenAuthentication]
    representation = s.CreditsOutput()

    @extend_schema(responses=s.CreditsOutput)
    def get(self, request):
        body = selectors.balance_get(user=request.user, present=self.json_body)
        if request.accepted_media_type != JSONRenderer.media_type:  # with parameters (indent): DRF renders it
            return Response(orjson.loads(body))
        return HttpResponse(body, content_type=JSONRenderer.media_type)

    @classmethod
    def json_body(cls, balance: dict) -> bytes:
        return orjson.dumps(cls.representation.to_representation(balance))


class MeCreditsBudgetView(APIView):
    """The caller's monthly credit budget: read it, or set it (monthly_credits null removes it)."""

    @extend_schema(responses=s.BudgetOutput)
    def get(self, request):
        return Response(s.BudgetOutput(selectors.budget_get(user_id=request.user.pk).as_dict()).data)

    @extend_schema(request=s.BudgetInput, responses=s.BudgetOutput)
    def put(self, request):
        data = s.BudgetInput(data=request.data)
        data.is_valid(raise_exception=True)
        budget = services.budget_set(user_id=request.user.pk, **data.validated_data)
        return Response(s.BudgetOutput(budget.as_dict()).data)


class StaffCreditBudgetView(APIView):
    """Sets a user's monthly credit budget for them (audited)."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {"put": ["credits.change_usercreditbalance"]}

    @extend_schema(request=s.BudgetInput, responses=s.BudgetOutput)
    def put(self, request, user_id):
        data = s.BudgetInput(data=request.data)
        data.is_valid(raise_exception=True)
        budget = services.budget_set_by_staff(user_id=user_id, actor=request.user, **data.validated_data)
        return Response(s.BudgetOutput(budget.as_dict()).data)


class UsageCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class MeUsageView(generics.ListAPIView):
    """The caller's usage, newest first, with the grants that paid for each request."""

    serializer_class = s.UsageOutput
    pagination_class = UsageCursorPagination
    filter_backends = []

    @extend_schema(parameters=[s.UsageListQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        query = s.UsageListQuery(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return selectors.usage_list_for_user(user=self.request.user, **query.validated_data)


class MeUsageDailyView(APIView):
    """Per-day totals of the caller's usage; the last 30 days unless a range (at most 366 days) is given."""

    @extend_schema(parameters=[s.UsageDailyQuery], responses=s.UsageDayOutput(many=True))
    def get(self, request):
        query = s.UsageDailyQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        date_to = query.validated_data.get("date_to") or timezone.now().date()
        date_from = query.validated_data.get("date_from") or date_to - timedelta(days=29)
        if (date_to - date_from).days > 365:
            date_from = date_to - timedelta(days=365)
        days = selectors.usage_daily_for_user(user=request.user, date_from=date_from, date_to=date_to)
        return Response(s.UsageDayOutput(days, many=True).data)


class StaffCreditGrantView(APIView):
    permission_classes = [HasStaffPermission]
    staff_permissions = {"post": ["credits.grant_credits"]}

    @extend_schema(request=s.StaffGrantInput, responses={201: s.StaffGrantOutput})
    def post(self, request):
        data = s.StaffGrantInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        user = get_user_model().objects.filter(pk=fields.pop("user_id")).first()
        if user is None:
            raise NotFound("No such user.", code=ErrorCode.UNKNOWN_USER)
        result = services.credit_grant_by_staff(user=user, actor=request.user, **fields)
        body = {"allocation_id": result.allocation.pk, "balance_after": result.balance_after}
        return Response(s.StaffGrantOutput(body).data, status=status.HTTP_201_CREATED)


class StaffDeductionListView(generics.ListAPIView):
    permission_classes = [HasStaffPermission]
    staff_permissions = {"get": ["credits.view_creditdeductionledger"]}
    serializer_class = s.StaffDeductionOutput
    filterset_class = StaffDeductionFilter
    queryset = selectors.deductions_for_staff()


class StaffDeductionReverseView(APIView):
    permission_classes = [HasStaffPermission]
    staff_permissions = {"post": ["credits.reverse_deduction"]}

    @extend_schema(request=s.ReverseInput, responses=s.ReverseOutput)
    def post(self, request, deduction_id):
        data = s.ReverseInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.deduction_reverse(deduction_id=deduction_id, actor=request.user, **data.validated_data)
        body = {
            "reversal_id": result.reversal.pk,
            "grant_id": result.grant.pk,
            "amount": result.reversal.amount,
            "balance_after": result.balance_after,
        }
        return Response(s.ReverseOutput(body).data)


class ProviderViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["credits.view_provider"],
        "retrieve": ["credits.view_provider"],
        "create": ["credits.add_provider"],
        "update": ["credits.change_provider"],
        "partial_update": ["credits.change_provider"],
    }
    queryset = Provider.objects.order_by("name")
    serializer_class = s.ProviderOutput
    filterset_fields = ["api_type", "is_enabled"]

    @extend_schema(request=s.ProviderInput, responses={201: s.ProviderOutput})
    def create(self, request, *args, **kwargs):
        data = s.ProviderInput(data=request.data)
        data.is_valid(raise_exception=True)
        provider = services.provider_create(actor=request.user, **data.validated_data)
        return Response(s.ProviderOutput(provider).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.ProviderChangeInput, responses=s.ProviderOutput)
    def update(self, request, *args, **kwargs):
        data = s.ProviderChangeInput(data=request.data, partial=kwargs.get("partial", False))
        data.is_valid(raise_exception=True)
        provider = services.provider_update(provider_id=kwargs["pk"], actor=request.user, **data.validated_data)
        return Response(s.ProviderOutput(provider).data)


class ModelPriceViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Vendor prices with their history. A new price for a model ends the one in force; rows are
    never edited, so the price a past request paid stays visible."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["credits.view_modelproviderpricing"],
        "retrieve": ["credits.view_modelproviderpricing"],
        "create": ["credits.add_modelproviderpricing"],
    }
    queryset = ModelProviderPricing.objects.select_related("provider").order_by(
        "provider__name", "model_name", "-effective_from"
    )
    serializer_class = s.ModelPriceOutput
    filterset_fields = ["provider__name", "model_name", "is_active"]

    @extend_schema(request=s.ModelPriceInput, responses={201: s.ModelPriceOutput, 200: s.ModelPriceOutput})
    def create(self, request, *args, **kwargs):
        data = s.ModelPriceInput(data=request.data)
        data.is_valid(raise_exception=True)
        change = services.model_price_create(actor=request.user, **data.validated_data)
        return Response(
            s.ModelPriceOutput(change.price).data,
            status=status.HTTP_201_CREATED if change.created else status.HTTP_200_OK,
        )


class PricingConfigViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Margin changes: proposed by one staff member, approved or rejected by another."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["credits.view_pricingconfig"],
        "retrieve": ["credits.view_pricingconfig"],
        "create": ["credits.add_pricingconfig"],
        "approve": ["credits.approve_pricingconfig"],
        "reject": ["credits.approve_pricingconfig"],
        "simulate": ["credits.view_pricingconfig", "credits.view_tokenusageledger"],
    }
    queryset = PricingConfig.objects.select_related("provider").order_by("-created_at")
    serializer_class = s.PricingConfigOutput
    filterset_fields = ["scope_type", "approval_status", "subscription_tier", "is_active"]

    @extend_schema(request=s.PricingConfigInput, responses={201: s.PricingConfigOutput})
    def create(self, request, *args, **kwargs):
        data = s.PricingConfigInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = {key: value for key, value in data.validated_data.items() if value is not None or key == "provider"}
        config = services.pricing_config_create(actor=request.user, **fields)
        return Response(s.PricingConfigOutput(config).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=s.PricingConfigOutput)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        config = services.pricing_config_approve(config_id=pk, actor=request.user)
        return Response(s.PricingConfigOutput(config).data)

    @extend_schema(request=s.PricingRejectInput, responses=s.PricingConfigOutput)
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        data = s.PricingRejectInput(data=request.data)
        data.is_valid(raise_exception=True)
        config = services.pricing_config_reject(config_id=pk, actor=request.user, **data.validated_data)
        return Response(s.PricingConfigOutput(config).data)

    @extend_schema(request=None, responses=s.PricingSimulationOutput)
    @action(detail=True, methods=["post"])
    def simulate(self, request, pk=None):
        """The margin and revenue this change would have moved over the last 30 days. Changes nothing."""
        simulation = selectors.pricing_config_simulate(config=self.get_object())
        return Response(s.PricingSimulationOutput(simulation).data)


class CreditPackListView(generics.ListAPIView):
    """The credit packs on sale, cheapest first."""

    serializer_class = s.CreditPackOutput
    filter_backends = []

    def get_queryset(self):
        return selectors.credit_packs_on_sale()


def _purchase_body(purchase: packs.PackPurchase) -> dict:
    operation = purchase.operation
    sold = operation.params.get("metadata") or {}
    return {
        "operation_id": operation.pk,
        "status": operation.state,
        "completed": purchase.checkout.completed,
        "checkout_url": None if purchase.checkout.completed else purchase.checkout.url,
        "amount": minor_to_text(operation.amount, operation.currency),
        "currency": operation.currency,
        "pack": {
            "id": sold.get("pack_id") or None,
            "name": sold.get("pack_name", ""),
            "credits": int(sold.get("credits") or 0),
            "credit_expiry_days": int(sold["credit_expiry_days"]) if sold.get("credit_expiry_days") else None,
        },
    }


class CreditPackPurchaseView(APIView):
    """Buys a credit pack: 201 with the payment, already succeeded (offline provider: the credits are
    in the balance) or waiting at the Stripe Checkout URL. 404 `unknown_pack` for a pack not on sale;
    503 when Stripe did not answer: the same request again resumes the same purchase."""

    calls_payment_provider = True

    @extend_schema(request=s.PackPurchaseInput, responses={201: s.PackPurchaseOutput})
    def post(self, request):
        data = s.PackPurchaseInput(data=request.data)
        data.is_valid(raise_exception=True)
        purchase = packs.credit_pack_purchase(user=request.user, pack_id=data.validated_data["pack"])
        return Response(s.PackPurchaseOutput(_purchase_body(purchase)).data, status=status.HTTP_201_CREATED)


class CreditPackViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Credit packs for staff. A pack once paid for keeps its price, currency, credits and expiry (409
    `pack_sold`) and is never deleted: retire it (is_active false) and create another."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["credits.view_creditpack"],
        "retrieve": ["credits.view_creditpack"],
        "create": ["credits.add_creditpack"],
        "update": ["credits.change_creditpack"],
        "partial_update": ["credits.change_creditpack"],
    }
    queryset = CreditPack.objects.order_by("-created_at", "-id")
    serializer_class = s.StaffCreditPackOutput
    filterset_fields = ["is_active", "currency"]

    @extend_schema(request=s.CreditPackInput, responses={201: s.StaffCreditPackOutput})
    def create(self, request, *args, **kwargs):
        data = s.CreditPackInput(data=request.data)
        data.is_valid(raise_exception=True)
        pack = packs.credit_pack_create(actor=request.user, **data.validated_data)
        return Response(s.StaffCreditPackOutput(pack).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.CreditPackInput, responses=s.StaffCreditPackOutput)
    def update(self, request, *args, **kwargs):
        data = s.CreditPackInput(data=request.data, partial=kwargs.get("partial", False))
        data.is_valid(raise_exception=True)
        pack = packs.credit_pack_update(pack_id=kwargs["pk"], actor=request.user, **data.validated_data)
        return Response(s.StaffCreditPackOutput(pack).data)
