"""Coupon endpoints. Customers validate and redeem with their user token; staff manage coupons,
campaigns and fraud detections and read the performance report. Every staff write is audited in its
own transaction by the service it calls."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_project.auth import HasStaffPermission
from billing_project.net import client_info
from coupons.api.filters import FraudDetectionFilter, StaffCampaignFilter, StaffCouponFilter
from coupons.api.serializers import (
    CampaignCouponInput,
    CampaignCouponOutput,
    CampaignInput,
    CampaignOutput,
    CampaignUpdateInput,
    CouponInput,
    CouponOutput,
    CouponQuestionInput,
    CouponUpdateInput,
    CouponValidateOutput,
    FraudDetectionOutput,
    GenerateCouponsInput,
    GenerateCouponsOutput,
    PerformanceOutput,
    PerformanceQuery,
    RedeemOutput,
    RedemptionOutput,
    ResolveInput,
)
from coupons.api.throttles import CouponIpRateThrottle, CouponUserRateThrottle
from coupons.selectors.reports import (
    campaigns_for_staff,
    coupon_performance,
    coupons_for_staff,
    coupons_of_campaign,
    fraud_detections_for_staff,
    redemptions_of_coupon,
)
from coupons.services.campaigns import (
    campaign_coupon_attach,
    campaign_coupon_detach,
    campaign_coupons_generate,
    campaign_create,
    campaign_delete,
    campaign_update,
    coupon_activate,
    coupon_create,
    coupon_deactivate,
    coupon_delete,
    coupon_update,
)
from coupons.services.redemption import coupon_redeem, coupon_validate
from coupons.services.review import fraud_detection_resolve

UUID_PATTERN = "[0-9a-fA-F-]{36}"


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class CouponValidateView(APIView):
    """Would this code redeem now, and what would it give? 200 `{valid, reason_code, discount_preview}`
    (the reason codes are the redeem's problem codes). Changes nothing; an unknown code counts
    towards the caller's code guessing, as at redemption."""

    throttle_classes = [CouponUserRateThrottle, CouponIpRateThrottle]

    @extend_schema(request=CouponQuestionInput, responses={200: CouponValidateOutput})
    def post(self, request):
        data = _valid(CouponQuestionInput, request.data)
        validation = coupon_validate(
            user=request.user,
            code=data["code"],
            tier=data.get("tier"),
            billing_cycle=data.get("billing_cycle"),
            amount_usd=data.get("amount_usd"),
            client=client_info(request, device_fingerprint=data["device_fingerprint"]),
        )
        preview = validation.preview
        return Response(
            CouponValidateOutput(
                {
                    "valid": validation.verdict.valid,
                    "reason_code": validation.verdict.reason,
                    "discount_preview": {
                        "original_amount_usd": preview.original_amount_usd,
                        "discount_usd": preview.discount_usd,
                        "final_amount_usd": preview.final_amount_usd,
                        "credits": preview.credits,
                        "months_free": preview.months_free,
                        "license": preview.license,
                    },
                }
            ).data
        )


class CouponRedeemView(APIView):
    """Redeems a code and applies its effect: 201, or a 422 problem whose `code` is the reason
    (the failed attempt is recorded for fraud analysis)."""

    throttle_classes = [CouponUserRateThrottle, CouponIpRateThrottle]

    @extend_schema(request=CouponQuestionInput, responses={201: RedeemOutput})
    def post(self, request):
        data = _valid(CouponQuestionInput, request.data)
        redemption = coupon_redeem(
            user=request.user,
            code=data["code"],
            tier=data.get("tier"),
            billing_cycle=data.get("billing_cycle"),
            amount_usd=data.get("amount_usd"),
            client=client_info(request, device_fingerprint=data["device_fingerprint"]),
        )
        return Response(RedeemOutput(redemption).data, status=status.HTTP_201_CREATED)


class StaffCouponViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Staff: coupons (filters coupon_type, discount_type, is_active, deleted, campaign, code).
    DELETE is a soft delete (204): the coupon stops validating and its history stays."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["coupons.view_coupon"],
        "retrieve": ["coupons.view_coupon"],
        "create": ["coupons.add_coupon"],
        "update": ["coupons.change_coupon"],
        "partial_update": ["coupons.change_coupon"],
        "destroy": ["coupons.delete_coupon"],
        "activate": ["coupons.change_coupon"],
        "deactivate": ["coupons.change_coupon"],
        "redemptions": ["coupons.view_coupon", "coupons.view_couponredemption"],
    }
    serializer_class = CouponOutput
    filterset_class = StaffCouponFilter
    queryset = coupons_for_staff()
    lookup_value_regex = UUID_PATTERN

    def _reloaded(self, coupon):
        return coupons_for_staff().get(pk=coupon.pk)

    @extend_schema(request=CouponInput, responses={201: CouponOutput})
    def create(self, request):
        coupon = coupon_create(actor=request.user, **_valid(CouponInput, request.data))
        return Response(CouponOutput(self._reloaded(coupon)).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=CouponUpdateInput, responses={200: CouponOutput})
    def partial_update(self, request, pk=None):
        changes = _valid(CouponUpdateInput, request.data)
        coupon = coupon_update(coupon_id=pk, actor=request.user, **changes)
        return Response(CouponOutput(self._reloaded(coupon)).data)

    @extend_schema(request=CouponUpdateInput, responses={200: CouponOutput})
    def update(self, request, pk=None):
        return self.partial_update(request, pk=pk)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        coupon_delete(coupon_id=pk, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: CouponOutput})
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None):
        coupon = coupon_activate(coupon_id=pk, actor=request.user)
        return Response(CouponOutput(self._reloaded(coupon)).data)

    @extend_schema(request=None, responses={200: CouponOutput})
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        coupon = coupon_deactivate(coupon_id=pk, actor=request.user)
        return Response(CouponOutput(self._reloaded(coupon)).data)

    @extend_schema(responses={200: RedemptionOutput(many=True)})
    @action(detail=True, methods=["get"], serializer_class=RedemptionOutput, filterset_class=None)
    def redemptions(self, request, pk=None):
        self.get_object()
        page = self.paginate_queryset(redemptions_of_coupon(coupon_id=pk))
        return self.get_paginated_response(RedemptionOutput(page, many=True).data)


COUPON_ID_PARAMETER = OpenApiParameter("coupon_id", OpenApiTypes.UUID, OpenApiParameter.PATH)


class StaffCampaignViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Staff: campaigns, their coupons (attach, detach, generate single-use codes). A campaign with
    redemptions cannot be deleted (409): deactivate it instead."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["coupons.view_couponcampaign"],
        "retrieve": ["coupons.view_couponcampaign"],
        "create": ["coupons.add_couponcampaign"],
        "update": ["coupons.change_couponcampaign"],
        "partial_update": ["coupons.change_couponcampaign"],
        "destroy": ["coupons.delete_couponcampaign"],
        "coupons": {
            "get": ["coupons.view_couponcampaign", "coupons.view_coupon"],
            "post": ["coupons.add_campaigncoupon"],
        },
        "coupon_detach": ["coupons.delete_campaigncoupon"],
        "generate_coupons": ["coupons.add_coupon", "coupons.add_campaigncoupon"],
    }
    serializer_class = CampaignOutput
    filterset_class = StaffCampaignFilter
    queryset = campaigns_for_staff()
    lookup_value_regex = UUID_PATTERN

    def _reloaded(self, campaign):
        return campaigns_for_staff().get(pk=campaign.pk)

    @extend_schema(request=CampaignInput, responses={201: CampaignOutput})
    def create(self, request):
        campaign = campaign_create(actor=request.user, **_valid(CampaignInput, request.data))
        return Response(CampaignOutput(self._reloaded(campaign)).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=CampaignUpdateInput, responses={200: CampaignOutput})
    def partial_update(self, request, pk=None):
        changes = _valid(CampaignUpdateInput, request.data)
        campaign = campaign_update(campaign_id=pk, actor=request.user, **changes)
        return Response(CampaignOutput(self._reloaded(campaign)).data)

    @extend_schema(request=CampaignUpdateInput, responses={200: CampaignOutput})
    def update(self, request, pk=None):
        return self.partial_update(request, pk=pk)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        campaign_delete(campaign_id=pk, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(methods=["GET"], responses={200: CouponOutput(many=True)})
    @extend_schema(methods=["POST"], request=CampaignCouponInput, responses={201: CampaignCouponOutput})
    @action(detail=True, methods=["get", "post"], filterset_class=None)
    def coupons(self, request, pk=None):
        if request.method == "POST":
            data = _valid(CampaignCouponInput, request.data)
            link = campaign_coupon_attach(campaign_id=pk, coupon_id=data["coupon_id"], actor=request.user)
            return Response(CampaignCouponOutput(link).data, status=status.HTTP_201_CREATED)
        self.get_object()
        page = self.paginate_queryset(coupons_of_campaign(campaign_id=pk))
        return self.get_paginated_response(CouponOutput(page, many=True).data)

    @extend_schema(parameters=[COUPON_ID_PARAMETER], request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=f"coupons/(?P<coupon_id>{UUID_PATTERN})")
    def coupon_detach(self, request, pk=None, coupon_id=None):
        campaign_coupon_detach(campaign_id=pk, coupon_id=coupon_id, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=GenerateCouponsInput, responses={201: GenerateCouponsOutput})
    @action(detail=True, methods=["post"], url_path="generate-coupons")
    def generate_coupons(self, request, pk=None):
        data = dict(_valid(GenerateCouponsInput, request.data))
        coupons = campaign_coupons_generate(
            campaign_id=pk, actor=request.user, count=data.pop("count"), prefix=data.pop("prefix"), **data
        )
        body = {"campaign_id": pk, "count": len(coupons), "codes": [coupon.code for coupon in coupons]}
        return Response(GenerateCouponsOutput(body).data, status=status.HTTP_201_CREATED)


class FraudDetectionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Staff: fraud detections (filters detection_type, severity, is_flagged, resolved, user,
    coupon) and `resolve`."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["coupons.view_couponfrauddetection"],
        "retrieve": ["coupons.view_couponfrauddetection"],
        "resolve": ["coupons.change_couponfrauddetection"],
    }
    serializer_class = FraudDetectionOutput
    filterset_class = FraudDetectionFilter
    queryset = fraud_detections_for_staff()
    lookup_value_regex = UUID_PATTERN

    @extend_schema(request=ResolveInput, responses={200: FraudDetectionOutput})
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        data = _valid(ResolveInput, request.data)
        detection = fraud_detection_resolve(detection_id=pk, actor=request.user, **data)
        return Response(FraudDetectionOutput(detection).data)


class CouponPerformanceView(APIView):
    """Staff: redemptions, discount given, revenue after discount and conversions to paid, by coupon
    and by campaign, over a date range of daily snapshots."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {"get": ["coupons.view_couponanalyticssnapshot"]}

    @extend_schema(parameters=[PerformanceQuery], responses={200: PerformanceOutput})
    def get(self, request):
        query = _valid(PerformanceQuery, request.query_params)
        report = coupon_performance(**query)
        return Response(PerformanceOutput(report).data)
