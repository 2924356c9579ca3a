"""Fixtures shared by every app's tests: API clients signed in as a user, staff or a service."""

import copy
import os
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from billing_project.auth import service_token_issue
from billing_project.tests.fake_stripe import WEBHOOK_SECRET, FakeStripeHttp

STRIPE_TEST_KEY = "sk_test_0123456789abcdefghijklmnopqrstuv"


def pytest_collection_modifyitems(config, items):
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL row locking: set DATABASE_URL to run it")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def forget_test_cache() -> None:
    """Deletes this run's cache entries and nothing else: the keys under the run's own prefix on
    Redis (a database that may be shared with a live server), or the process's own local memory."""
    from django.core.cache import cache

    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")
    else:
        cache.clear()


@pytest.fixture(scope="session", autouse=True)
def _test_cache_namespace():
    """Every cache key of this run, and of the processes it starts, lives under a prefix of its own."""
    from django.conf import settings
    from django.test.utils import override_settings

    prefix = f"{settings.CACHE_KEY_PREFIX}-test-{uuid.uuid4().hex[:12]}"
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["KEY_PREFIX"] = prefix
    with override_settings(CACHES=caches), mock.patch.dict(os.environ, {"CACHE_KEY_PREFIX": prefix}):
        yield
        forget_test_cache()


@pytest.fixture(autouse=True)
def _clear_cache():
    forget_test_cache()
    yield
    forget_test_cache()


@pytest.fixture
def stripe_http(settings, monkeypatch):
    """Stripe configured (secret key and webhook secret), its outbound HTTP stubbed: the one place it is."""
    import stripe

    settings.STRIPE_SECRET_KEY = STRIPE_TEST_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    fake = FakeStripeHttp()
    monkeypatch.setattr(stripe, "default_http_client", fake)
    monkeypatch.setattr(stripe, "max_network_retries", 0)
    return fake


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def access_token_for(user) -> str:
    return str(RefreshToken.for_user(user).access_token)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(
        username="user@example.com", email="user@example.com", password="correct horse battery"
    )


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(
        username="other@example.com", email="other@example.com", password="correct horse battery"
    )


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="staff@example.com", email="staff@example.com", password="correct horse battery", is_staff=True
    )


@pytest.fixture
def user_client(user):
    client = APIClient()
    client.credentials(**bearer(access_token_for(user)))
    return client


@pytest.fixture
def staff_client(staff_user):
    client = APIClient()
    client.credentials(**bearer(access_token_for(staff_user)))
    return client


@pytest.fixture
def service_token():
    def issue(*scopes: str, lifetime: timedelta = timedelta(hours=1)) -> str:
        return service_token_issue(service="gateway", scopes=list(scopes), lifetime=lifetime)

    return issue


@pytest.fixture
def service_client(service_token):
    client = APIClient()
    client.credentials(**bearer(service_token("usage:write")))
    return client


def run_concurrently(task, arguments: list) -> list:
    """Runs task(argument) in one thread per argument, released together; returns results in order
    (an exception is returned, not raised). Each thread uses, then closes, its own DB connection."""
    import threading

    from django.db import connections

    barrier = threading.Barrier(len(arguments))
    results: list = [None] * len(arguments)

    def run(index, argument):
        try:
            barrier.wait()
            results[index] = task(argument)
        except Exception as error:  # reported to the test, which asserts on it
            results[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(arguments)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
