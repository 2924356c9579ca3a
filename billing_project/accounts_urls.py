from django.urls import path

from billing_project.accounts_views import TokenObtainView, TokenRefreshView
from billing_project.gdpr_api import AdminUserView

urlpatterns = [
    path("auth/token/", TokenObtainView.as_view(), name="auth-token"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="auth-token-refresh"),
    path("admin/users/<int:user_id>/", AdminUserView.as_view(), name="admin-user"),
]
