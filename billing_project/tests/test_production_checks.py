from io import StringIO

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from billing_project.checks import check_csrf_middleware, production_problems, refuse_unsafe_production_start


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = "s" * 40
    settings.JWT_SECRET = "j" * 40
    settings.SERVICE_JWT_SECRET = "v" * 40
    settings.DATABASE_URL = "postgres://billing@db/billing"
    settings.ALLOWED_HOSTS = ["billing.internal"]
    settings.STRIPE_SECRET_KEY = "sk_test_" + "K7" * 20
    settings.STRIPE_WEBHOOK_SECRET = "whsec_" + "Q3" * 16
    settings.PAYMENTS_PROVIDER = ""
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
    production.STRIPE_WEBHOOK_SECRET = ""

    problems = production_problems()

    assert len(problems) == 6
    joined = "\n".join(problems)
    for name in (
        "SECRET_KEY",
        "SERVICE_JWT_SECRET",
        "DATABASE_URL",
        "ALLOWED_HOSTS",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
    ):
        assert name in joined
    with pytest.raises(ImproperlyConfigured) as refused:
        refuse_unsafe_production_start()
    assert all(problem in str(refused.value) for problem in problems)


def test_check_deploy_shows_the_same_list(production):
    production.STRIPE_WEBHOOK_SECRET = "whsec_changeme"

    with pytest.raises(SystemCheckError) as failure:
        call_command("check", "--deploy", stdout=StringIO(), stderr=StringIO())

    assert "STRIPE_WEBHOOK_SECRET is a placeholder" in str(failure.value)


def test_the_development_secret_key_is_refused(production):
    production.SECRET_KEY = production.DEV_SECRET_KEY

    assert production_problems() == ["SECRET_KEY is a development default or placeholder."]


def test_a_long_secret_with_a_placeholder_marker_is_refused(production):
    production.JWT_SECRET = "changeme-" + "k" * 40

    assert production_problems() == ["JWT_SECRET is a development default or placeholder."]


def test_production_refuses_to_run_the_offline_provider_it_was_not_told_to_run(production):
    # given: a deployment that forgot Stripe's keys, though it set the webhook secret
    production.STRIPE_SECRET_KEY = ""

    problems = production_problems()

    # then: startup refuses, instead of marking every checkout paid
    assert len(problems) == 1
    assert "STRIPE_SECRET_KEY is missing" in problems[0]
    assert "PAYMENTS_PROVIDER=offline" in problems[0]
    with pytest.raises(ImproperlyConfigured):
        refuse_unsafe_production_start()


def test_production_without_any_stripe_setting_lists_both_missing_secrets(production):
    production.STRIPE_SECRET_KEY = ""
    production.STRIPE_WEBHOOK_SECRET = ""

    problems = production_problems()

    assert [problem.split(" ", 1)[0] for problem in problems] == ["STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"]


def test_the_offline_provider_runs_in_production_only_when_named(production):
    production.STRIPE_SECRET_KEY = ""
    production.STRIPE_WEBHOOK_SECRET = ""
    production.PAYMENTS_PROVIDER = "offline"

    assert production_problems() == []


def test_an_unknown_payments_provider_is_refused(production):
    production.PAYMENTS_PROVIDER = "paypal"

    assert production_problems() == ["PAYMENTS_PROVIDER must be stripe or offline, not 'paypal'."]


def test_debug_mode_is_not_checked(settings):
    settings.DEBUG = True
    settings.SECRET_KEY = "short"

    assert production_problems() == []


def test_check_deploy_finds_the_consoles_csrf_protection(production):
    out = StringIO()

    call_command("check", "--deploy", "--tag", "security", stdout=out, stderr=out)

    assert "W003" not in out.getvalue() and "billing.W001" not in out.getvalue()


def test_no_csrf_middleware_at_all_is_warned_about(production):
    production.MIDDLEWARE = [path for path in production.MIDDLEWARE if "Csrf" not in path]

    (warning,) = check_csrf_middleware(None)

    assert warning.id == "billing.W001"
