"""License endpoints. Every customer endpoint needs the owner's user token (IsUser, the default):
a key is only ever looked up among the caller's own licenses, so someone else's key answers 404
(or `unknown_key` on validate) exactly like a key that does not exist."""

from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_project.auth import HasStaffPermission
from billing_project.errors import NotFound
from licensing import selectors, services
from licensing.api.filters import StaffLicenseFilter
from licensing.api.serializers import (
    ActivateInput,
    ActivateOutput,
    DeactivateInput,
    DeactivateOutput,
    EligibilityOutput,
    EligibilityQuery,
    IssueInput,
    OwnerLicenseOutput,
    PurchaseInput,
    PurchaseOutput,
    ReasonInput,
    StaffLicenseOutput,
    UpgradeInput,
    UpgradePurchaseOutput,
    ValidateInput,
    ValidateOutput,
    reveals_full_keys,
)
from licensing.api.throttles import LicenseIpRateThrottle, LicenseKeyRateThrottle
from licensing.codes import ErrorCode
from licensing.models import PerpetualLicense

LICENSE_KEY_PARAMETER = OpenApiParameter("license_key", OpenApiTypes.STR, OpenApiParameter.PATH)


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class LicensePurchaseView(APIView):
    """Buys a license: 201 with the license active (offline provider) or pending with the Stripe
    Checkout URL to pay at; the key is shown in full, to its owner. 503 when Stripe did not answer:
    the same request again gets the same license and checkout."""

    calls_payment_provider = True

    @extend_schema(request=PurchaseInput, responses={201: PurchaseOutput})
    def post(self, request):
        data = _valid(PurchaseInput, request.data)
        purchase = services.license_purchase(user=request.user, version=data.get("version"))
        return Response(PurchaseOutput(purchase).data, status=status.HTTP_201_CREATED)


class LicenseActivateView(APIView):
    """201 for a new device, 200 when the device was already active (free); 409
    `activation_limit_reached` lists the active devices; 429 `device_change_limit` past the daily limit."""

    throttle_classes = [LicenseKeyRateThrottle, LicenseIpRateThrottle]

    @extend_schema(request=ActivateInput, responses={201: ActivateOutput, 200: ActivateOutput})
    def post(self, request):
        data = _valid(ActivateInput, request.data)
        result = services.activation_create(
            user=request.user,
            license_key=data["license_key"],
            device_fingerprint=data["device_fingerprint"],
            device_name=data["device_name"],
            os_type=data["os"],
            app_version=data["app_version"],
        )
        return Response(
            ActivateOutput(result).data, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        )


class LicenseDeactivateView(APIView):
    throttle_classes = [LicenseKeyRateThrottle, LicenseIpRateThrottle]

    @extend_schema(request=DeactivateInput, responses={200: DeactivateOutput})
    def post(self, request):
        data = _valid(DeactivateInput, request.data)
        result = services.activation_deactivate(user=request.user, **data)
        return Response(DeactivateOutput(result).data)


class LicenseValidateView(APIView):
    """Always 200 `{valid, reason}` for a well-formed request."""

    throttle_classes = [LicenseKeyRateThrottle, LicenseIpRateThrottle]

    @extend_schema(request=ValidateInput, responses={200: ValidateOutput})
    def post(self, request):
        data = _valid(ValidateInput, request.data)
        result = services.license_validate(user=request.user, **data)
        return Response(ValidateOutput(result).data)


class LicenseEligibilityView(APIView):
    @extend_schema(
        parameters=[LICENSE_KEY_PARAMETER, EligibilityQuery],
        responses={200: EligibilityOutput},
    )
    def get(self, request, license_key: str):
        data = _valid(EligibilityQuery, request.query_params)
        eligibility = selectors.license_eligibility(user=request.user, license_key=license_key, version=data["version"])
        return Response(EligibilityOutput(eligibility).data)


class LicenseUpgradeView(APIView):
    """Buys the upgrade to the next major version: 201 with the upgrade completed (offline provider)
    or pending with the Stripe Checkout URL; 409 `upgrade_not_available` when nothing newer is on sale.
    The key travels in the body, as for activation, so it stays out of URLs and access logs."""

    calls_payment_provider = True

    @extend_schema(request=UpgradeInput, responses={201: UpgradePurchaseOutput})
    def post(self, request):
        data = _valid(UpgradeInput, request.data)
        purchase = services.license_upgrade(user=request.user, license_key=data["license_key"])
        return Response(UpgradePurchaseOutput(purchase).data, status=status.HTTP_201_CREATED)


class MyLicenseListView(generics.ListAPIView):
    """The caller's licenses with their keys in full and their active devices."""

    serializer_class = OwnerLicenseOutput

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no signed-in user
            return PerpetualLicense.objects.none()
        return selectors.license_list_for_owner(user=self.request.user)


class StaffLicenseViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Staff: list (filters status, byok_enabled, user, search), issue, suspend, reactivate, revoke.
    Each write is audited in its own transaction; an illegal transition is a 409 problem."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {
        "list": ["licensing.view_perpetuallicense"],
        "retrieve": ["licensing.view_perpetuallicense"],
        "create": ["licensing.add_perpetuallicense"],
        "suspend": ["licensing.change_perpetuallicense"],
        "reactivate": ["licensing.change_perpetuallicense"],
        "revoke": ["licensing.change_perpetuallicense"],
    }
    serializer_class = StaffLicenseOutput
    filterset_class = StaffLicenseFilter

    def list(self, request, *args, **kwargs):
        response = super().list(request, *args, **kwargs)
        self._audit_full_keys(request, [row["id"] for row in response.data["results"]])
        return response

    def retrieve(self, request, *args, **kwargs):
        response = super().retrieve(request, *args, **kwargs)
        self._audit_full_keys(request, [response.data["id"]])
        return response

    def _audit_full_keys(self, request, license_ids: list) -> None:
        if reveals_full_keys(request):
            services.full_keys_shown(license_ids=license_ids)

    queryset = selectors.license_list_for_staff()
    lookup_value_regex = "[0-9a-fA-F-]{36}"

    @extend_schema(request=IssueInput, responses={201: StaffLicenseOutput})
    def create(self, request):
        data = _valid(IssueInput, request.data)
        user = get_user_model()._default_manager.filter(pk=data.pop("user_id")).first()
        if user is None:
            raise NotFound("No user with this id.", code=ErrorCode.USER_NOT_FOUND)
        license_ = services.license_issue(user=user, actor=request.user, **data)
        return Response(StaffLicenseOutput(license_).data, status=status.HTTP_201_CREATED)

    def _transition(self, request, service):
        data = _valid(ReasonInput, request.data)
        license_ = service(license_id=self.kwargs["pk"], actor=request.user, reason=data["reason"])
        return Response(StaffLicenseOutput(license_).data)

    @extend_schema(request=ReasonInput, responses={200: StaffLicenseOutput})
    @action(detail=True, methods=["post"])
    def suspend(self, request, pk=None):
        return self._transition(request, services.license_suspend)

    @extend_schema(request=ReasonInput, responses={200: StaffLicenseOutput})
    @action(detail=True, methods=["post"])
    def reactivate(self, request, pk=None):
        return self._transition(request, services.license_reactivate)

    @extend_schema(request=ReasonInput, responses={200: StaffLicenseOutput})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        return self._transition(request, services.license_revoke)
