from io import StringIO

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from billing_project.checks import production_problems, refuse_unsafe_production_start


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = "s" * 40
    settings.JWT_SECRET = "j" * 40
    settings.SERVICE_JWT_SECRET = "v" * 40
    settings.DATABASE_URL = "postgres://billing@db/billing"
    settings.ALLOWED_HOSTS = ["billing.internal"]
    settings.STRIPE_SECRET_KEY = ""
    settings.STRIPE_WEBHOOK_SECRET = ""
    return settings


def test_safe_production_settings_have_no_problems(production):
    assert production_problems() == []
    refuse_unsafe_production_start()


def test_every_problem_is_listed_at_once(production):
    production.SECRET_KEY = "short"
    production.SERVICE_JWT_SECRET = "short too"
    production.DATABASE_URL = ""
    production.ALLOWED_HOSTS = []
    production.STRIPE_SECRET_KEY = "sk_test_placeholder"

    problems = production_problems()

    assert len(problems) == 6
    joined = "\n".join(problems)
    for name in ("SECRET_KEY", "SERVICE_JWT_SECRET", "DATABASE_URL", "ALLOWED_HOSTS", "STRIPE_SECRET_KEY"):
        assert name in joined
    with pytest.raises(ImproperlyConfigured) as refused:
        refuse_unsafe_production_start()
    assert all(problem in str(refused.value) for problem in problems)


def test_check_deploy_shows_the_same_list(production):
    production.STRIPE_WEBHOOK_SECRET = "whsec_changeme"

    with pytest.raises(SystemCheckError) as failure:
        call_command("check", "--deploy", stdout=StringIO(), stderr=StringIO())

    assert "STRIPE_WEBHOOK_SECRET is a placeholder" in str(failure.value)


def test_debug_mode_is_not_checked(settings):
    settings.DEBUG = True
    settings.SECRET_KEY = "short"

    assert production_problems() == []
