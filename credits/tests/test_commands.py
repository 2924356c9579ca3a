"""Ops commands: grant_credits and import_model_pricing in both file formats."""

import json
from decimal import Decimal
from io import StringIO
from pathlib import Path

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
    with pytest.raises(CommandError, match="no user"):
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


EXCERPT = Path(__file__).parent / "data" / "litellm_excerpt.json"


def report_of(path: Path) -> dict:
    document = json.loads(path.read_text())
    return {"counts": document["counts"], "by_source": {entry["source"]: entry for entry in document["entries"]}}


def test_import_reports_every_entry_with_its_result(tmp_path):
    report = tmp_path / "report.json"

    run("import_model_pricing", str(EXCERPT), "--no-progress", "--report", str(report))

    result = report_of(report)
    excerpt = json.loads(EXCERPT.read_text())
    assert set(result["by_source"]) == set(excerpt)
    assert result["counts"] == {"imported": 19, "skipped": 2}
    assert (
        result["by_source"]["aiml/dall-e-3"]["reason"] == "no per-token input price (priced by: output_cost_per_image)"
    )
    assert result["by_source"]["sample_spec"]["result"] == "skipped"
    gemini = result["by_source"]["gemini/gemini-2.5-pro"]
    assert (gemini["provider"], gemini["model_name"], gemini["region"]) == ("gemini", "gemini-2.5-pro", "")
    assert "google_maps_grounding_cost_per_query" in gemini["not_billed"]


def test_import_twice_changes_nothing_the_second_time(tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    run("import_model_pricing", str(EXCERPT), "--no-progress", "--report", str(first))
    prices = ModelProviderPricing.objects.count()

    output = run("import_model_pricing", str(EXCERPT), "--no-progress", "--report", str(second))

    assert "0 new prices, 19 unchanged" in output
    assert report_of(second)["counts"] == {"unchanged": 19, "skipped": 2}
    assert ModelProviderPricing.objects.count() == prices


def test_import_is_idempotent_for_prices_finer_than_ten_decimals_per_1k(tmp_path):
    # 1.41953125e-7 per token is 0.000141953125 per 1k (12 places); 2.0000000000000002e-7 is a float artefact
    path = tmp_path / "prices.json"
    path.write_text(
        '{"m1": {"input_cost_per_token": 1.41953125e-7, "output_cost_per_token": 2.0000000000000002e-7, '
        '"litellm_provider": "morph"}}'
    )
    run("import_model_pricing", str(path), "--no-progress")

    again = run("import_model_pricing", str(path), "--no-progress")

    assert "0 new prices, 1 unchanged" in again
    price = current_price("morph", "m1")
    assert (price.input_price_per_1k, price.output_price_per_1k) == (Decimal("0.000141953125"), Decimal("0.0002"))


def test_azure_and_azure_ai_stay_apart_in_one_vendor_family():
    run("import_model_pricing", str(EXCERPT), "--no-progress")

    assert current_price("azure", "mistral-large-latest").input_price_per_1k == Decimal("0.008")
    assert current_price("azure_ai", "mistral-large-latest").input_price_per_1k == Decimal("0.002")
    assert set(Provider.objects.filter(name__in=["azure", "azure_ai"]).values_list("vendor_family", flat=True)) == {
        "azure"
    }
    assert Provider.objects.get(name="vertex_ai").vendor_family == "google"


def test_names_lose_routing_prefixes_and_regional_prefixes_become_regions():
    run("import_model_pricing", str(EXCERPT), "--no-progress")

    eu = ModelProviderPricing.objects.get(provider__name="azure", model_name="gpt-4o-2024-08-06", region="eu")
    anywhere = ModelProviderPricing.objects.get(provider__name="azure", model_name="gpt-4o-2024-08-06", region="")
    assert (eu.input_price_per_1k, anywhere.input_price_per_1k) == (Decimal("0.00275"), Decimal("0.0025"))
    assert ModelProviderPricing.objects.filter(
        provider__name="bedrock", model_name="anthropic.claude-v2:1", region="us-east-1"
    ).exists()
    assert ModelProviderPricing.objects.filter(provider__name="vertex_ai", model_name="gemini-2.5-pro").exists()


def test_an_alias_takes_the_prices_of_the_model_it_names():
    run("import_model_pricing", str(EXCERPT), "--no-progress")

    alias, target = current_price("anthropic", "claude-sonnet-latest"), current_price("anthropic", "claude-sonnet-5-5")
    assert (alias.input_price_per_1k, alias.cache_write_1h_price_per_1k) == (Decimal("0.002"), Decimal("0.004"))
    assert alias.service_tiers == target.service_tiers


def test_import_keeps_tiers_fees_and_every_component():
    run("import_model_pricing", str(EXCERPT), "--no-progress")

    gpt = current_price("openai", "gpt-5.4")
    assert gpt.context_tiers == [
        {"above_tokens": 272000, "prices": {"cache_read": "0.0005", "input": "0.005", "output": "0.0225"}}
    ]
    assert gpt.service_tiers["flex"]["prices"] == {"cache_read": "0.00013", "input": "0.00125", "output": "0.0075"}
    claude = current_price("anthropic", "claude-sonnet-4-5")
    assert claude.request_fees == {"web_search": "0.01"}
    audio = current_price("openai", "gpt-4o-audio-preview-2024-12-17")
    assert (audio.audio_input_price_per_1k, audio.audio_output_price_per_1k) == (Decimal("0.04"), Decimal("0.08"))
    free = current_price("ollama", "codegeex4")
    assert (free.input_price_per_1k, free.output_price_per_1k) == (0, 0)


def test_conflicting_names_keep_the_provider_prefixed_entry(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "deepseek-chat": {
                    "input_cost_per_token": 2.7e-7,
                    "output_cost_per_token": 1.1e-6,
                    "litellm_provider": "deepseek",
                },
                "deepseek/deepseek-chat": {
                    "input_cost_per_token": 2.8e-7,
                    "output_cost_per_token": 4.2e-7,
                    "litellm_provider": "deepseek",
                },
            }
        )
    )
    report = tmp_path / "report.json"

    run("import_model_pricing", str(path), "--no-progress", "--report", str(report))

    assert current_price("deepseek", "deepseek-chat").input_price_per_1k == Decimal("0.00028")
    skipped = report_of(report)["by_source"]["deepseek-chat"]
    assert skipped["result"] == "skipped" and "'deepseek/deepseek-chat'" in skipped["reason"]


def test_effective_from_accepts_a_date_and_starts_the_prices_then(tmp_path):
    run("import_model_pricing", str(EXCERPT), "--effective-from", "2025-06-01", "--no-progress")

    price = current_price("openai", "gpt-4o")
    assert price.effective_from.isoformat() == "2025-06-01T00:00:00+00:00"
    seed = ModelProviderPricing.objects.get(provider__name="openai", model_name="gpt-4o", effective_until__isnull=False)
    assert seed.effective_until == price.effective_from


def test_a_refusal_names_the_model_and_imports_nothing(tmp_path):
    # given prices imported from 2025-06-01, then a changed file starting earlier than that
    run("import_model_pricing", str(EXCERPT), "--effective-from", "2025-06-01", "--no-progress")
    before = ModelProviderPricing.objects.count()
    changed = json.loads(EXCERPT.read_text())
    changed["gpt-4o"]["input_cost_per_token"] = 3e-06
    changed["o4-mini"]["output_cost_per_token"] = 5e-06
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(changed))

    with pytest.raises(CommandError) as refused:
        run("import_model_pricing", str(path), "--effective-from", "2025-01-01", "--no-progress")

    message = str(refused.value)
    assert "2 refused" in message
    assert "gpt-4o (openai/gpt-4o): price_history_conflict" in message
    assert "o4-mini (openai/o4-mini)" in message
    assert ModelProviderPricing.objects.count() == before
