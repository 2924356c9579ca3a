from django.http import HttpResponse, JsonResponse


def liveness(request):
    return JsonResponse({"status": "ok"})


def readiness(request):
    return JsonResponse({"status": "ok"})


def metrics(request):
    return HttpResponse("")
