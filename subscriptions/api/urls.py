from django.urls import path

from subscriptions.api.views import MeView, RegisterView, TierListView

urlpatterns = [
    path("auth/register/", RegisterView.as_view(), name="auth-register"),
    path("me/", MeView.as_view(), name="me"),
    path("tiers/", TierListView.as_view(), name="tier-list"),
]
