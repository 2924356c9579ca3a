from django.urls import path

from billing_project.accounts_views import TokenObtainView, TokenRefreshView

urlpatterns = [
    path("auth/token/", TokenObtainView.as_view(), name="auth-token"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="auth-token-refresh"),
]
