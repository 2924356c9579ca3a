"""Auto-recharge settings: the caller's own (`me/credits/auto-recharge/`) and any user's for staff
(`admin/credits/auto-recharge/{user_id}/`, audited)."""

from decimal import Decimal

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_project.auth import HasStaffPermission
from billing_project.errors import NotFound
from billing_project.money import minor_to_major
from credits.api import recharge_serializers as s
from credits.codes import ErrorCode
from credits.services import recharge


def _body(setting) -> dict:
    if setting is None:
        return {
            "enabled": False,
            "threshold": None,
            "pack": None,
            "monthly_cap": None,
            "charged_this_month": Decimal("0.00"),
            "consecutive_failures": 0,
            "paused": False,
            "paused_at": None,
            "pause_reason": "",
            "updated_at": None,
        }
    currency = setting.pack.currency
    charged = recharge.recharges_charged_this_month(setting=setting, currency=currency)
    return {
        "enabled": setting.enabled,
        "threshold": setting.threshold,
        "pack": setting.pack,
        "monthly_cap": setting.monthly_cap,
        "charged_this_month": minor_to_major(charged, currency),
        "consecutive_failures": setting.consecutive_failures,
        "paused": setting.paused_at is not None,
        "paused_at": setting.paused_at,
        "pause_reason": setting.pause_reason,
        "updated_at": setting.updated_at,
    }


def _change(request) -> recharge.AutoRechargeChange:
    data = s.AutoRechargeInput(data=request.data)
    data.is_valid(raise_exception=True)
    fields = data.validated_data
    return recharge.AutoRechargeChange(
        enabled=fields["enabled"],
        threshold=fields["threshold"],
        pack_id=fields["pack"],
        monthly_cap=fields["monthly_cap"],
    )


class MeAutoRechargeView(APIView):
    @extend_schema(responses=s.AutoRechargeOutput)
    def get(self, request):
        return Response(s.AutoRechargeOutput(_body(recharge.auto_recharge_get(user_id=request.user.pk))).data)

    @extend_schema(request=s.AutoRechargeInput, responses=s.AutoRechargeOutput)
    def put(self, request):
        setting = recharge.auto_recharge_set(user=request.user, change=_change(request), actor=request.user)
        return Response(s.AutoRechargeOutput(_body(setting)).data)


class StaffAutoRechargeView(APIView):
    permission_classes = [HasStaffPermission]
    staff_permissions = {"get": ["credits.view_autorecharge"], "put": ["credits.change_autorecharge"]}

    @staticmethod
    def _user(user_id):
        user = get_user_model().objects.filter(pk=user_id).first()
        if user is None:
            raise NotFound("No such user.", code=ErrorCode.UNKNOWN_USER)
        return user

    @extend_schema(responses=s.AutoRechargeOutput)
    def get(self, request, user_id):
        user = self._user(user_id)
        return Response(s.AutoRechargeOutput(_body(recharge.auto_recharge_get(user_id=user.pk))).data)

    @extend_schema(request=s.AutoRechargeInput, responses=s.AutoRechargeOutput)
    def put(self, request, user_id):
        user = self._user(user_id)
        setting = recharge.auto_recharge_set(user=user, change=_change(request), actor=request.user, audited=True)
        return Response(s.AutoRechargeOutput(_body(setting)).data)
