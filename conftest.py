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

from billing_project.service_tokens import service_token_issue
from payments.tests.stripe_emulator import WEBHOOK_SECRET, StripeEmulator

STRIPE_TEST_KEY = "sk_test_0123456789abcdefghijklmnopqrstuv"


def pytest_collection_modifyitems(config, items):
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL to run it")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def forget_test_cache() -> None:
    """Deletes this run's cache entries and nothing else: the keys under the run's own prefix on
    Redis (a database that may be shared with a live server), or the process's own local memory."""
    from django.core.cache import cache, caches

    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")
    else:
        cache.clear()
    caches["process"].clear()


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
def _tasks_run_as_in_the_web_process():
    """Tasks run eagerly in this process, where `.get()` on a result is allowed. Celery keeps a
    process-wide "inside a worker's pool process" flag that forbids it; in a full CI run something
    before a test left it on (it failed two tests that pass alone), so each test starts with it off."""
    from celery._state import _set_task_join_will_block

    _set_task_join_will_block(False)


@pytest.fixture(autouse=True)
def _clear_cache():
    forget_test_cache()
    yield
    forget_test_cache()


@pytest.fixture(scope="session")
def stripe_emulator():
    """One Stripe emulator (a real HTTP server on 127.0.0.1) for the whole run; each test resets it."""
    return StripeEmulator().serve()


@pytest.fixture
def stripe_http(settings, stripe_emulator):
    """Stripe configured (secret key and webhook secret) and pointed at the emulator through
    STRIPE_API_BASE: the SDK and our code run unchanged, only the other end of the HTTP is fake.
    Network retries are off so that a test counts each request; timeouts are short."""
    stripe_emulator.reset()
    settings.STRIPE_SECRET_KEY = STRIPE_TEST_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = stripe_emulator.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.STRIPE_CONNECT_TIMEOUT_SECONDS = 1
    settings.STRIPE_READ_TIMEOUT_SECONDS = 2
    yield stripe_emulator
    stripe_emulator.reset()


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


def role_grant(user, role: str):
    """Puts a staff user in one of the role groups (billing_project.roles). A test that flushed the
    database (transaction=True) took the groups the migration made with it: they are made again."""
    from django.apps import apps
    from django.contrib.auth.models import Group

    from billing_project.roles import roles_sync

    if not Group.objects.filter(name=role).exists():
        roles_sync(apps=apps)
    user.groups.add(Group.objects.get(name=role))
    return type(user)._default_manager.get(pk=user.pk)  # a fresh instance: permissions are cached per instance


@pytest.fixture
def staff_user(django_user_model):
    """A staff member in the `admin` role: every permission, not a superuser."""
    user = django_user_model.objects.create_user(
        username="staff@example.com", email="staff@example.com", password="correct horse battery", is_staff=True
    )
    return role_grant(user, "admin")


@pytest.fixture
def support_client(django_user_model):
    """A staff member in the `support` role (reads; license keys masked)."""
    user = django_user_model.objects.create_user(
        username="support@example.com", email="support@example.com", password="correct horse battery", is_staff=True
    )
    client = APIClient()
    client.credentials(**bearer(access_token_for(role_grant(user, "support"))))
    return client


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
        return service_token_issue(service="gateway", scopes=list(scopes), lifetime=lifetime).token

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
