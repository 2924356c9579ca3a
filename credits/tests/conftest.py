import uuid
from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone

from billing_project.roles import roles_sync
from credits.services import credit_grant, pricing_catalog_seed


@pytest.fixture
def price_catalog(db):
    """The seeded providers, vendor prices and approved tier margins of SPEC 2."""
    pricing_catalog_seed()


def usage_event(user, **overrides) -> dict:
    """A usage/record body: 1000 in + 2000 out on gpt-4o, started a second ago."""
    started = timezone.now() - timedelta(seconds=1)
    event = {
        "request_id": str(uuid.uuid4()),
        "user_id": user.pk,
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 2000,
        "request_type": "chat",
        "request_started_at": started.isoformat(),
        "request_completed_at": (started + timedelta(milliseconds=800)).isoformat(),
    }
    event.update(overrides)
    return event


def fund(user, amount: int, *, expires_at=None, source="bonus"):
    return credit_grant(user=user, amount=amount, source=source, expires_at=expires_at, reason="test funds")


@pytest.fixture
def roles_synced(db):
    """The role groups as `roles_sync` leaves them once the credit models exist (a data migration
    re-syncs them on deploy)."""
    roles_sync(apps=apps)


@pytest.fixture
def console(client, django_user_model):
    """The console signed in as a superuser (`console.admin`)."""
    admin = django_user_model.objects.create_superuser(
        username="root@example.com", email="root@example.com", password="pw"
    )
    client.force_login(admin)
    client.admin = admin
    return client
