"""The real URL configuration plus two probe views: one that crashes, one that needs a service scope."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_project.auth import service_scope
from billing_project.urls import urlpatterns as real_urlpatterns


class CrashView(APIView):
    def get(self, request):
        raise RuntimeError("secret internals that must not leak")

    post = get


class ScopedServiceView(APIView):
    permission_classes = [service_scope("usage:write")]

    def post(self, request):
        return Response({"service": request.user.name}, status=201)


urlpatterns = [
    path("api/v1/probe/crash/", CrashView.as_view()),
    path("api/v1/probe/service/", ScopedServiceView.as_view()),
    *real_urlpatterns,
]
