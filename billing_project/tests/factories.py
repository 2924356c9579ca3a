"""Factories for the platform's own tables and for users.

Every app's factories make rows that satisfy the database's constraints. Ledger identities that span
several tables (a balance equals its grants) are the services' job: tests that need them set state
through services.
"""

import uuid
from datetime import timedelta
from types import ModuleType

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from factory.django import DjangoModelFactory

from billing_project.enums import EventType
from billing_project.models import (
    IdempotencyKey,
    Notification,
    OutboundEvent,
    RevokedTokenFamily,
    ServiceToken,
    StaffSession,
    VerifiedEmail,
    WebhookDelivery,
    WebhookEndpoint,
)
from billing_project.webhook_delivery import endpoint_secret_generate


def model_factories(module: ModuleType) -> list[type[DjangoModelFactory]]:
    """The model factories a factories module defines (not the ones it imports)."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, DjangoModelFactory)
        and value.__module__ == module.__name__
        and value._meta.model is not None
    ]


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()

    email = factory.Sequence(lambda n: f"user{n}@example.test")
    username = factory.SelfAttribute("email")
    password = factory.django.Password("password")


class IdempotencyKeyFactory(DjangoModelFactory):
    class Meta:
        model = IdempotencyKey

    caller = factory.Sequence(lambda n: f"user:{n}")
    path = "/api/v1/subscriptions"
    key = factory.LazyFunction(lambda: str(uuid.uuid4()))
    request_hash = factory.Faker("sha256")
    status_code = 201
    response_body = "{}"
    content_type = "application/json"


class ServiceTokenFactory(DjangoModelFactory):
    class Meta:
        model = ServiceToken

    service = "gateway"
    scopes = factory.LazyFunction(lambda: ["usage:write"])
    key_id = "0123456789abcdef"
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=30))


class StaffSessionFactory(DjangoModelFactory):
    class Meta:
        model = StaffSession

    user = factory.SubFactory(UserFactory, is_staff=True)
    session_key = factory.Sequence(lambda n: f"session{n:033d}")
    ip_address = "192.0.2.10"
    user_agent = "Mozilla/5.0"


class VerifiedEmailFactory(DjangoModelFactory):
    class Meta:
        model = VerifiedEmail

    user = factory.SubFactory(UserFactory)
    email = factory.SelfAttribute("user.email")
    verified_at = factory.LazyFunction(timezone.now)


class RevokedTokenFamilyFactory(DjangoModelFactory):
    class Meta:
        model = RevokedTokenFamily

    family = factory.LazyFunction(lambda: uuid.uuid4().hex)
    user = factory.SubFactory(UserFactory)
    reason = "A rotated refresh token was presented again."


class WebhookEndpointFactory(DjangoModelFactory):
    class Meta:
        model = WebhookEndpoint

    url = factory.Sequence(lambda n: f"https://hooks{n}.example.test/billing")
    secret = factory.LazyFunction(endpoint_secret_generate)
    event_types = factory.LazyFunction(list)


class OutboundEventFactory(DjangoModelFactory):
    class Meta:
        model = OutboundEvent

    type = EventType.CREDITS_GRANTED
    user = factory.SubFactory(UserFactory)
    subject = factory.LazyAttribute(lambda event: f"user:{event.user.pk}")
    data = factory.LazyFunction(lambda: {"amount": 100})


class WebhookDeliveryFactory(DjangoModelFactory):
    class Meta:
        model = WebhookDelivery

    endpoint = factory.SubFactory(WebhookEndpointFactory)
    event = factory.SubFactory(OutboundEventFactory)
    next_attempt_at = factory.LazyFunction(timezone.now)


class NotificationFactory(DjangoModelFactory):
    class Meta:
        model = Notification

    kind = EventType.CREDITS_BALANCE_LOW
    user = factory.SubFactory(UserFactory)
    occurrence = factory.Sequence(lambda n: f"occurrence-{n}")
    context = factory.LazyFunction(lambda: {"balance": 150, "threshold": 200})
