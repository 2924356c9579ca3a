from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_project.auth import HasStaffPermission
from billing_project.gdpr import user_erase, user_export, user_get


class AdminUserView(APIView):
    """GET: the user's data export. DELETE: erase the user (GDPR)."""

    permission_classes = [HasStaffPermission]
    staff_permissions = {"get": ["auth.view_user", "auth.export_user"], "delete": ["auth.delete_user"]}

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, user_id: int):
        return Response(user_export(user=user_get(user_id=user_id), actor=request.user))

    @extend_schema(responses={204: None})
    def delete(self, request, user_id: int):
        user_erase(user=user_get(user_id=user_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
