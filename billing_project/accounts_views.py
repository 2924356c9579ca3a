"""Tokens for people: email + password in, a short-lived access token and a rotating refresh token out."""

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.tokens import RefreshToken

from billing_project.auth import NoAuthentication
from billing_project.schema import problem_responses
from billing_project.throttles import ScopedRateThrottle
from billing_project.token_rotation import refresh_token_rotate


class TokenObtainInput(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(trim_whitespace=False, write_only=True)


TokenPairOutput = inline_serializer(
    "TokenPair", fields={"access": serializers.CharField(), "refresh": serializers.CharField()}
)


def user_authenticate(*, email: str, password: str):
    """The active user with this e-mail (case-insensitive) and password, or None."""
    user_model = get_user_model()
    user = user_model._default_manager.filter(email__iexact=email).order_by("date_joined").first()
    if user is None:
        user_model().set_password(password)  # same work as a real check: no timing oracle for e-mails
        return None
    if not user.is_active or not user.check_password(password):
        return None
    return user


class TokenObtainView(APIView):
    authentication_classes = [NoAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(request=TokenObtainInput, responses={200: TokenPairOutput, **problem_responses(401)}, auth=[])
    def post(self, request):
        data = TokenObtainInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_authenticate(**data.validated_data)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid e-mail or password.", code="invalid_credentials")
        refresh = RefreshToken.for_user(user)
        return Response({"access": str(refresh.access_token), "refresh": str(refresh)})


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

    @extend_schema(request=TokenRefreshInput, responses={200: TokenPairOutput, **problem_responses(401)}, auth=[])
    def post(self, request):
        data = TokenRefreshInput(data=request.data)
        data.is_valid(raise_exception=True)
        pair = refresh_token_rotate(raw=data.validated_data["refresh"])
        return Response({"access": pair.access, "refresh": pair.refresh})
