"""E-mail verification over HTTP: the link's target, and asking for the link again."""

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_project.auth import NoAuthentication
from billing_project.email_verification import email_verification_send, email_verify
from billing_project.throttles import ScopedRateThrottle

VerificationOutput = inline_serializer(
    "EmailVerification", fields={"email": serializers.EmailField(), "verified": serializers.BooleanField()}
)


class VerifyEmailInput(serializers.Serializer):
    token = serializers.CharField(max_length=500)


def verification_link_template(request) -> str:
    """Where the e-mailed link points, `{token}` standing for the token: EMAIL_VERIFICATION_URL
    (a page of the web app that posts the token here) or else this API's own GET endpoint."""
    return (
        settings.EMAIL_VERIFICATION_URL or request.build_absolute_uri(reverse("auth-verify-email")) + "?token={token}"
    )


class VerifyEmailView(APIView):
    """Marks the address the token names as verified: the e-mailed link itself (GET), or a web page
    posting its token. 400 `verification_token_invalid` / `verification_token_expired` otherwise."""

    authentication_classes = [NoAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(
        parameters=[OpenApiParameter("token", str, required=True)], responses={200: VerificationOutput}, auth=[]
    )
    def get(self, request):
        return self._verify(request.query_params)

    @extend_schema(request=VerifyEmailInput, responses={200: VerificationOutput}, auth=[])
    def post(self, request):
        return self._verify(request.data)

    def _verify(self, data):
        serializer = VerifyEmailInput(data=data)
        serializer.is_valid(raise_exception=True)
        verified = email_verify(token=serializer.validated_data["token"])
        return Response({"email": verified.email, "verified": True})


class VerifyEmailResendView(APIView):
    """Sends the caller a new verification link (202), unless their address is verified (200)."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(request=None, responses={200: VerificationOutput, 202: VerificationOutput})
    def post(self, request):
        user = request.user
        sent = email_verification_send(user=user, link_template=verification_link_template(request))
        return Response(
            {"email": user.email, "verified": not sent}, status=status.HTTP_202_ACCEPTED if sent else status.HTTP_200_OK
        )
