import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

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
