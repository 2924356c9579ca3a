from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from billing_project.auth import NoAuthentication
from subscriptions.api.serializers import AccountOutput, MeOutput, RegisterInput, TierOutput
from subscriptions.selectors import tier_list_active, user_tier
from subscriptions.services import account_register


class RegisterView(APIView):
    authentication_classes = [NoAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(request=RegisterInput, responses={201: AccountOutput}, auth=[])
    def post(self, request):
        data = RegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = account_register(**data.validated_data)
        return Response(AccountOutput(user).data, status=status.HTTP_201_CREATED)


class MeView(APIView):
    @extend_schema(responses=MeOutput)
    def get(self, request):
        user = request.user
        return Response(MeOutput({"id": user.pk, "email": user.email, "tier": user_tier(user=user)}).data)


@extend_schema(auth=[])
class TierListView(generics.ListAPIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    serializer_class = TierOutput

    def get_queryset(self):
        return tier_list_active()
