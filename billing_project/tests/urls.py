"""The real URL configuration plus probe views: one that crashes, one that needs a service scope, and
two that meet PostgreSQL's transaction conflicts (a raised one, and a real deadlock between requests)."""

import threading
from collections import Counter

from django.contrib.auth.models import Group
from django.db import connection, transaction
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


class ConflictView(APIView):
    """Creates the group named in the body. Its first `fail` attempts (counted per name) write the
    group, then meet a real PostgreSQL error with the SQLSTATE `sqlstate` (40P01 or 40001)."""

    attempts: Counter = Counter()

    def post(self, request):
        name, sqlstate = request.data["name"], {"40P01": "40P01", "40001": "40001"}[request.data["sqlstate"]]
        ConflictView.attempts[name] += 1
        with transaction.atomic():
            Group.objects.create(name=name)
            if ConflictView.attempts[name] <= request.data["fail"]:
                with connection.cursor() as cursor:
                    cursor.execute(f"DO $$ BEGIN RAISE EXCEPTION 'probe conflict' USING ERRCODE = '{sqlstate}'; END $$")
        return Response({"name": name, "attempts": ConflictView.attempts[name]}, status=201)


class LockPairView(APIView):
    """Locks two groups in the order given, in one transaction. On its first pass each request waits at
    `rendezvous` holding its first lock, so two requests taking the pair in opposite orders deadlock."""

    rendezvous: threading.Barrier | None = None
    passed: set = set()

    def post(self, request):
        first, second = request.data["order"]
        with transaction.atomic():
            Group.objects.select_for_update().get(name=first)
            if LockPairView.rendezvous is not None and request.data["client"] not in LockPairView.passed:
                LockPairView.passed.add(request.data["client"])
                LockPairView.rendezvous.wait(timeout=10)
            Group.objects.select_for_update().get(name=second)
        return Response({"order": [first, second]})


urlpatterns = [
    path("api/v1/probe/conflict/", ConflictView.as_view()),
    path("api/v1/probe/lock-pair/", LockPairView.as_view()),
    path("api/v1/probe/crash/", CrashView.as_view()),
    path("api/v1/probe/service/", ScopedServiceView.as_view()),
    *real_urlpatterns,
]
