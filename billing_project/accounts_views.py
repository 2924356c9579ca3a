"""Tokens for people: email + password in, a short-lived access token and a rotating refresh token out."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_project.auth import NoAuthentication
from billing_project.signin import user_sign_in
from billing_project.throttles import ScopedRateThrottle
from billing_project.token_rotation import refresh_token_rotate, token_pair_issue


class TokenObtainInput(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(trim_whitespace=False, write_only=True)
    otp = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=32,
        write_only=True,
        help_text="Staff: the code of your authenticator app, or one of your recovery codes.",
    )


TokenPairOutput = inline_serializer(
    "TokenPair", fields={"access": serializers.CharField(), "refresh": serializers.CharField()}
)


class TokenObtainView(APIView):
    """Staff accounts also send `otp` when they need a second factor (STAFF_2FA_REQUIRED, or an
    enrolled authenticator). Failures count per account and per IP; too many lock both out (429)."""

    authentication_classes = [NoAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(request=TokenObtainInput, responses={200: TokenPairOutput}, auth=[])
    def post(self, request):
        data = TokenObtainInput(data=request.data)
        data.is_valid(raise_exception=True)
        # django-axes keeps its counts and lockout flag on the Django request, not on DRF's wrapper.
        sign_in = user_sign_in(request=request._request, **data.validated_data)
        pair = token_pair_issue(user=sign_in.user, second_factor_verified=sign_in.second_factor)
        return Response({"access": pair.access, "refresh": pair.refresh})


class TokenRefreshInput(serializers.Serializer):
    refresh = serializers.CharField(trim_whitespace=False)


class TokenRefreshView(APIView):
    """Exchanges a refresh token, once, for an access token and the next refresh token. A token
    used a second time is refused and ends its sign-in (every token rotated from it): 401
    `token_reused`, then `token_revoked` (billing_project.token_rotation)."""

    authentication_classes = [NoAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(request=TokenRefreshInput, responses={200: TokenPairOutput}, auth=[])
    def post(self, request):
        data = TokenRefreshInput(data=request.data)
        data.is_valid(raise_exception=True)
        pair = refresh_token_rotate(raw=data.validated_data["refresh"])
        return Response({"access": pair.access, "refresh": pair.refresh})
