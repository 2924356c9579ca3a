from django.urls import path

from billing_project.accounts_views import TokenObtainView, TokenRefreshView
from billing_project.gdpr_api import AdminUserView
from billing_project.verification_views import VerifyEmailResendView, VerifyEmailView

urlpatterns = [
    path("auth/token/", TokenObtainView.as_view(), name="auth-token"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="auth-token-refresh"),
    path("auth/verify-email/", VerifyEmailView.as_view(), name="auth-verify-email"),
    path("auth/verify-email/resend/", VerifyEmailResendView.as_view(), name="auth-verify-email-resend"),
    path("admin/users/<int:user_id>/", AdminUserView.as_view(), name="admin-user"),
]
