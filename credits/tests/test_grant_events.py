"""Every grant of credits is announced once as `credits.granted`, in the transaction that adds them."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from billing_project.models import OutboundEvent
from credits.models import CreditSource
from credits.services import credit_grant


def granted_events(user):
    return list(OutboundEvent.objects.filter(type="credits.granted", user=user).values_list("data", flat=True))


@pytest.mark.django_db
def test_a_staff_grant_is_announced_once_with_its_amount_source_and_balance(staff_client, user):
    response = staff_client.post(
        "/api/v1/admin/credits/grant/", {"user_id": user.pk, "amount": 750, "reason": "goodwill"}, format="json"
    )

    assert response.status_code == 201, response.content
    (data,) = granted_events(user)
    assert data == {
        "allocation_id": response.json()["allocation_id"],
        "user_id": user.pk,
        "amount": 750,
        "source": "admin_grant",
        "subscription_id": None,
        "expires_at": None,
        "balance_after": response.json()["balance_after"],
    }


@pytest.mark.django_db
def test_a_period_allocated_again_is_not_announced_again(user):
    start = timezone.now()
    period = {"subscription_id": "6f1c2b1e-8d1a-4a54-9a53-0d0f4f3a2b10", "period_start": start}
    first = credit_grant(user=user, amount=100, source=CreditSource.SUBSCRIPTION, **period)
    again = credit_grant(user=user, amount=100, source=CreditSource.SUBSCRIPTION, **period)

    assert first.created and not again.created
    assert [data["allocation_id"] for data in granted_events(user)] == [str(first.allocation.pk)]


@pytest.mark.django_db
def test_a_grant_rolled_back_is_never_announced(user):
    with pytest.raises(RuntimeError), transaction.atomic():
        credit_grant(user=user, amount=100, source=CreditSource.BONUS, expires_at=timezone.now() + timedelta(days=1))
        raise RuntimeError("the caller's change failed")

    assert granted_events(user) == []
