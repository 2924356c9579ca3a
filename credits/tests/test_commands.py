"""Ops commands: grant_credits and import_model_pricing in both file formats."""

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.models import AdminAuditLog
from credits.models import ModelProviderPricing, Provider, UserCreditBalance

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_grant_credits_grants_and_audits(user):
    output = run("grant_credits", "--user", user.email, "--amount", "250", "--reason", "goodwill")

    assert "Granted 250 credits" in output
    assert UserCreditBalance.objects.get(user=user).amount == 250
    assert AdminAuditLog.objects.get(action="grant").new_value["reason"] == "goodwill"


def test_grant_credits_dry_run_changes_nothing(user):
    output = run("grant_credits", "--user", str(user.pk), "--amount", "250", "--reason", "goodwill", "--dry-run")

    assert "Would grant 250 credits" in output
    assert not UserCreditBalance.objects.filter(user=user, amount__gt=0).exists()
    assert not AdminAuditLog.objects.exists()


def test_grant_credits_to_an_unknown_user_fails():
    with pytest.raises(CommandError, match="No user"):
        run("grant_credits", "--user", "nobody@example.com", "--amount", "5", "--reason", "x")


LITELLM = {
    "sample_spec": {"input_cost_per_token": 0, "litellm_provider": "one of https://docs.litellm.ai/docs/providers"},
    "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05, "litellm_provider": "openai"},
    "claude-3-5-sonnet": {
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_read_input_token_cost": 3e-07,
        "litellm_provider": "anthropic",
    },
    "mistral/mistral-large-latest": {
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 6e-06,
        "litellm_provider": "mistral",
    },
    "bedrock/anthropic.claude-v2": {
        "input_cost_per_token": 8e-06,
        "output_cost_per_token": 2.4e-05,
        "litellm_provider": "bedrock",
    },
    "dall-e-3": {"output_cost_per_image": 0.04, "litellm_provider": "openai"},
}


def current_price(provider: str, model: str) -> ModelProviderPricing:
    return ModelProviderPricing.objects.get(provider__name=provider, model_name=model, effective_until__isnull=True)


def test_import_litellm_file_converts_per_token_prices_to_per_thousand(tmp_path):
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_text(json.dumps(LITELLM))

    output = run("import_model_pricing", str(path), "--no-progress")

    assert "litellm file: 4 new prices, 0 unchanged, 2 new providers, 2 entries skipped" in output
    gpt = current_price("openai", "gpt-4o")
    assert (gpt.input_price_per_1k, gpt.output_price_per_1k) == (Decimal("0.0025"), Decimal("0.01"))
    sonnet = current_price("anthropic", "claude-3-5-sonnet")
    assert (sonnet.cache_input_price_per_1k, sonnet.cache_hit_price_per_1k) == (Decimal("0.00375"), Decimal("0.0003"))
    assert current_price("mistral", "mistral-large-latest").input_price_per_1k == Decimal("0.002")
    assert Provider.objects.filter(name="mistral", api_type="mistral").exists()
    assert ModelProviderPricing.objects.filter(model_name="gpt-4o").count() == 2  # the seed price, now ended

    assert Provider.objects.filter(name="bedrock", vendor_family="aws", api_type="other").exists()
    again = run("import_model_pricing", str(path), "--no-progress")
    assert "0 new prices, 4 unchanged" in again


def test_import_project_file(tmp_path):
    path = tmp_path / "prices.json"
    rows = [
        {
            "provider": "google",
            "model_name": "gemini-2-0-flash",
            "input_price_per_1k": "0.0001",
            "output_price_per_1k": "0.0004",
            "effective_from": "2026-06-01T00:00:00Z",
        }
    ]
    path.write_text(json.dumps(rows))

    output = run("import_model_pricing", str(path), "--no-progress")

    assert "project file: 1 new prices" in output
    assert current_price("google", "gemini-2-0-flash").output_price_per_1k == Decimal("0.0004")


def test_import_dry_run_changes_nothing(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(LITELLM))

    output = run("import_model_pricing", str(path), "--dry-run", "--no-progress")

    assert output.startswith("Would import litellm file: 4 new prices")
    assert ModelProviderPricing.objects.count() == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ('[{"provider": "openai"}]', "missing or malformed field"),
        (
            '[{"provider": "openai", "model_name": "m", "input_price_per_1k": "-1", "output_price_per_1k": "1"}]',
            "negative",
        ),
    ],
)
def test_import_refuses_a_bad_file_whole(tmp_path, content, message):
    path = tmp_path / "prices.json"
    path.write_text(content)

    with pytest.raises(CommandError, match=message):
        run("import_model_pricing", str(path), "--no-progress")
    assert ModelProviderPricing.objects.count() == 4
