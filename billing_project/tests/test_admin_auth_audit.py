"""Console writes to groups and to the JWT token tables are audited like every other console write."""

import pytest
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from audit.models import AdminAuditLog, AuditAction

pytestmark = pytest.mark.django_db


def test_adding_a_group_in_the_console_is_audited(admin_client, admin_user):
    response = admin_client.post("/admin/auth/group/add/", {"name": "Support"})

    assert response.status_code == 302
    row = AdminAuditLog.objects.get(resource_type="auth.group")
    assert (row.action, row.actor, row.new_value["name"]) == (AuditAction.CREATE, admin_user, "Support")


def test_revoking_a_session_in_the_console_is_audited_without_the_token(admin_client, admin_user, user):
    RefreshToken.for_user(user)
    outstanding = OutstandingToken.objects.get(user=user)

    response = admin_client.post("/admin/token_blacklist/blacklistedtoken/add/", {"token": outstanding.pk})

    assert response.status_code == 302
    assert BlacklistedToken.objects.filter(token=outstanding).exists()
    row = AdminAuditLog.objects.get(resource_type="token_blacklist.blacklistedtoken")
    assert (row.action, row.actor) == (AuditAction.CREATE, admin_user)


def test_issued_tokens_cannot_be_changed_or_deleted_in_the_console(admin_client, user):
    RefreshToken.for_user(user)
    outstanding = OutstandingToken.objects.get(user=user)

    response = admin_client.post(f"/admin/token_blacklist/outstandingtoken/{outstanding.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert OutstandingToken.objects.filter(pk=outstanding.pk).exists()
