"""The vendor cost recorded through usage/record equals the vendor's bill, for 48 (model, usage
object) cases across providers, context tiers, caching, audio, image output, reasoning, service
tiers, regions and fees.

The prices are an excerpt of LiteLLM's model_prices_and_context_window.json (data/, verbatim),
imported with `manage.py import_model_pricing`. Each expected cost is written out below from the
vendor's per-token prices in that excerpt (tokens x USD per token), independently of the code that
normalizes usage objects and resolves prices."""

from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from credits.models import TokenUsageLedger
from credits.tests.conftest import fund, usage_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]

EXCERPT = Path(__file__).parent / "data" / "litellm_excerpt.json"
RECORD = "/api/v1/usage/record/"
TOLERANCE = Fraction(1, 10**9)
FREE_MARGIN = Fraction(2)
CREDIT_USD = Fraction(1, 1000)


def chat(prompt, completion, *, cached=0, audio_in=0, reasoning=0, audio_out=0):
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": audio_in},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": audio_out},
    }


def anthropic(input_tokens, output_tokens, *, read=0, written=None, split=None, searches=0):
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens, "cache_read_input_tokens": read}
    if written is not None:
        usage["cache_creation_input_tokens"] = written
    if split is not None:
        usage["cache_creation"] = {"ephemeral_5m_input_tokens": split[0], "ephemeral_1h_input_tokens": split[1]}
    if searches:
        usage["server_tool_use"] = {"web_search_requests": searches}
    return usage


def gemini(prompt, candidates, *, cached=0, thoughts=0, audio=0, image=0):
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": candidates, "totalTokenCount": prompt + candidates}
    if cached:
        usage["cachedContentTokenCount"] = cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if audio:
        usage["promptTokensDetails"] = [
            {"modality": "TEXT", "tokenCount": prompt - audio},
            {"modality": "AUDIO", "tokenCount": audio},
        ]
    if image:
        usage["candidatesTokensDetails"] = [
            {"modality": "TEXT", "tokenCount": candidates - image},
            {"modality": "IMAGE", "tokenCount": image},
        ]
    return usage


# (id, provider, model, usage_format, usage object or flat fields, extra event fields, expected USD)
CASES = [
    # OpenAI Chat Completions: prompt_tokens include the cached ones, which are priced once, at the cache price.
    ("gpt-4o plain", "openai", "gpt-4o", "openai_chat", chat(1000, 500), {}, "1000*2.5e-6 + 500*1e-5"),
    (
        "gpt-4o cached",
        "openai",
        "gpt-4o",
        "openai_chat",
        chat(10000, 500, cached=8000),
        {},
        "2000*2.5e-6 + 8000*1.25e-6 + 500*1e-5",
    ),
    (
        "gpt-4o batch",
        "openai",
        "gpt-4o",
        "openai_chat",
        chat(10000, 500, cached=8000),
        {"service_tier": "batch"},
        "2000*1.25e-6 + 8000*1.25e-6 + 500*5e-6",
    ),
    (
        "gpt-4o priority",
        "openai",
        "gpt-4o",
        "openai_chat",
        chat(10000, 500, cached=8000),
        {"service_tier": "priority"},
        "2000*4.25e-6 + 8000*2.125e-6 + 500*1.7e-5",
    ),
    (
        "gpt-4o flex without flex prices",
        "openai",
        "gpt-4o",
        "openai_chat",
        chat(10000, 500, cached=8000),
        {"service_tier": "flex"},
        "2000*2.5e-6 + 8000*1.25e-6 + 500*1e-5",
    ),
    (
        "gpt-4o responses",
        "openai",
        "gpt-4o",
        "openai_responses",
        {
            "input_tokens": 1000,
            "input_tokens_details": {"cached_tokens": 400},
            "output_tokens": 300,
            "output_tokens_details": {"reasoning_tokens": 100},
            "total_tokens": 1300,
        },
        {},
        "600*2.5e-6 + 400*1.25e-6 + 300*1e-5",
    ),
    # gpt-5.4: above 272k input tokens the whole request takes the long-context prices.
    ("gpt-5.4 300k", "openai", "gpt-5.4", "openai_chat", chat(300000, 1000), {}, "300000*5e-6 + 1000*2.25e-5"),
    ("gpt-5.4 at 272k", "openai", "gpt-5.4", "openai_chat", chat(272000, 1000), {}, "272000*2.5e-6 + 1000*1.5e-5"),
    (
        "gpt-5.4 one over 272k",
        "openai",
        "gpt-5.4",
        "openai_chat",
        chat(272001, 1000),
        {},
        "272001*5e-6 + 1000*2.25e-5",
    ),
    (
        "gpt-5.4 300k cached",
        "openai",
        "gpt-5.4",
        "openai_chat",
        chat(300000, 1000, cached=200000),
        {},
        "100000*5e-6 + 200000*5e-7 + 1000*2.25e-5",
    ),
    (
        "gpt-5.4 flex 300k",
        "openai",
        "gpt-5.4",
        "openai_chat",
        chat(300000, 1000),
        {"service_tier": "flex"},
        "300000*2.5e-6 + 1000*1.125e-5",
    ),
    (
        "gpt-5.4 batch 300k cached",
        "openai",
        "gpt-5.4",
        "openai_chat",
        chat(300000, 1000, cached=100000),
        {"service_tier": "batch"},
        "200000*2.5e-6 + 100000*2.5e-7 + 1000*1.125e-5",
    ),
    (
        "gpt-5.4 priority",
        "openai",
        "gpt-5.4",
        "openai_chat",
        chat(1000, 500),
        {"service_tier": "priority"},
        "1000*5e-6 + 500*3e-5",
    ),
    (
        # No price for priority above 272k: the higher of the priority and long-context prices.
        "gpt-5.4 priority 300k",
        "openai",
        "gpt-5.4",
        "openai_chat",
        chat(300000, 1000),
        {"service_tier": "priority"},
        "300000*5e-6 + 1000*3e-5",
    ),
    (
        "gpt-5.4 reasoning",
        "openai",
        "gpt-5.4",
        "openai_chat",
        chat(1000, 5000, reasoning=3000),
        {},
        "1000*2.5e-6 + 5000*1.5e-5",
    ),
    # Audio tokens at the audio prices.
    (
        "gpt-4o-audio chat",
        "openai",
        "gpt-4o-audio-preview-2024-12-17",
        "openai_chat",
        chat(2000, 1000, audio_in=1500, audio_out=800),
        {},
        "500*2.5e-6 + 1500*4e-5 + 200*1e-5 + 800*8e-5",
    ),
    (
        "gpt-4o-audio flat",
        "openai",
        "gpt-4o-audio-preview-2024-12-17",
        "flat",
        {"input_tokens": 2000, "audio_input_tokens": 1500, "output_tokens": 1000, "audio_output_tokens": 800},
        {},
        "500*2.5e-6 + 1500*4e-5 + 200*1e-5 + 800*8e-5",
    ),
    (
        "o4-mini flex cached reasoning",
        "openai",
        "o4-mini",
        "openai_chat",
        chat(10000, 2000, cached=5000, reasoning=1500),
        {"service_tier": "flex"},
        "5000*5.5e-7 + 5000*1.38e-7 + 2000*2.2e-6",
    ),
    (
        "o4-mini priority",
        "openai",
        "o4-mini",
        "openai_chat",
        chat(1000, 1000),
        {"service_tier": "priority"},
        "1000*2e-6 + 1000*8e-6",
    ),
    # Anthropic: input_tokens are the uncached ones; cache reads and writes come beside them.
    (
        "claude plain",
        "anthropic",
        "claude-sonnet-4-5",
        "anthropic",
        anthropic(1000, 500),
        {},
        "1000*3e-6 + 500*1.5e-5",
    ),
    (
        "claude cache",
        "anthropic",
        "claude-sonnet-4-5",
        "anthropic",
        anthropic(200, 500, read=10000, written=3000),
        {},
        "200*3e-6 + 10000*3e-7 + 3000*3.75e-6 + 500*1.5e-5",
    ),
    (
        "claude 1h cache",
        "anthropic",
        "claude-sonnet-4-5",
        "anthropic",
        anthropic(200, 500, read=10000, written=3000, split=(1000, 2000)),
        {},
        "200*3e-6 + 10000*3e-7 + 1000*3.75e-6 + 2000*6e-6 + 500*1.5e-5",
    ),
    (
        "claude batch",
        "anthropic",
        "claude-sonnet-4-5",
        "anthropic",
        anthropic(1000, 500, read=2000, written=1000),
        {"service_tier": "batch"},
        "1000*1.5e-6 + 2000*1.5e-7 + 1000*1.875e-6 + 500*7.5e-6",
    ),
    (
        "claude web search",
        "anthropic",
        "claude-sonnet-4-5",
        "anthropic",
        anthropic(1000, 500, searches=3),
        {},
        "1000*3e-6 + 500*1.5e-5 + 3*0.01",
    ),
    (
        "claude flat",
        "anthropic",
        "claude-sonnet-4-5",
        "flat",
        {
            "input_tokens": 13200,
            "cached_input_tokens": 10000,
            "cache_write_tokens": 1000,
            "cache_write_1h_tokens": 2000,
            "output_tokens": 500,
        },
        {},
        "200*3e-6 + 10000*3e-7 + 1000*3.75e-6 + 2000*6e-6 + 500*1.5e-5",
    ),
    (
        "claude priority without prices",
        "anthropic",
        "claude-sonnet-4-5",
        "anthropic",
        anthropic(1000, 500),
        {"service_tier": "priority"},
        "1000*3e-6 + 500*1.5e-5",
    ),
    (
        "claude alias",
        "anthropic",
        "claude-sonnet-latest",
        "anthropic",
        anthropic(1000, 1000),
        {},
        "1000*2e-6 + 1000*1e-5",
    ),
    # Gemini: promptTokenCount includes the cached tokens; thoughts are output beside the candidates.
    (
        "gemini pro thoughts",
        "gemini",
        "gemini-2.5-pro",
        "gemini",
        gemini(1000, 500, thoughts=700),
        {},
        "1000*1.25e-6 + 1200*1e-5",
    ),
    (
        "gemini pro 250k cached",
        "gemini",
        "gemini-2.5-pro",
        "gemini",
        gemini(250000, 1000, cached=50000),
        {},
        "200000*2.5e-6 + 50000*2.5e-7 + 1000*1.5e-5",
    ),
    (
        "gemini pro priority 250k",
        "gemini",
        "gemini-2.5-pro",
        "gemini",
        gemini(250000, 1000),
        {"service_tier": "priority"},
        "250000*4.5e-6 + 1000*2.7e-5",
    ),
    (
        "gemini pro flex",
        "gemini",
        "gemini-2.5-pro",
        "gemini",
        gemini(1000, 500),
        {"service_tier": "flex"},
        "1000*6.25e-7 + 500*5e-6",
    ),
    (
        "gemini pro batch 210k",
        "gemini",
        "gemini-2.5-pro",
        "gemini",
        gemini(210000, 1000),
        {"service_tier": "batch"},
        "210000*1.25e-6 + 1000*7.5e-6",
    ),
    (
        "gemini response wrapper",
        "gemini",
        "gemini-2.5-pro",
        "gemini",
        {"usageMetadata": gemini(1000, 500)},
        {},
        "1000*1.25e-6 + 500*1e-5",
    ),
    (
        "gemini flash audio",
        "gemini",
        "gemini-2.5-flash",
        "gemini",
        gemini(1000, 200, thoughts=300, audio=400),
        {},
        "600*3e-7 + 400*1e-6 + 200*2.5e-6 + 300*2.5e-6",
    ),
    (
        "gemini flash flex audio",
        "gemini",
        "gemini-2.5-flash",
        "gemini",
        gemini(1000, 200, thoughts=300, audio=400),
        {"service_tier": "flex"},
        "600*1.5e-7 + 400*5e-7 + 200*1.25e-6 + 300*2.5e-6",
    ),
    (
        "gemini image output",
        "gemini",
        "gemini-2.5-flash-image",
        "gemini",
        gemini(100, 1390, image=1290),
        {},
        "100*3e-7 + 100*2.5e-6 + 1290*3e-5",
    ),
    (
        "vertex gemini 250k",
        "vertex_ai",
        "gemini-2.5-pro",
        "gemini",
        gemini(250000, 1000),
        {},
        "250000*2.5e-6 + 1000*1.5e-5",
    ),
    (
        "vertex gemini priority",
        "vertex_ai",
        "gemini-2.5-pro",
        "gemini",
        gemini(1000, 500),
        {"service_tier": "priority"},
        "1000*2.25e-6 + 500*1.8e-5",
    ),
    # Azure: a data zone's own price for requests reported in it; azure and azure_ai apart.
    (
        "azure global",
        "azure",
        "gpt-4o-2024-08-06",
        "openai_chat",
        chat(1000, 500),
        {},
        "1000*2.5e-6 + 500*1e-5",
    ),
    (
        "azure eu",
        "azure",
        "gpt-4o-2024-08-06",
        "openai_chat",
        chat(1000, 500),
        {"region": "eu"},
        "1000*2.75e-6 + 500*1.1e-5",
    ),
    (
        "azure other region",
        "azure",
        "gpt-4o-2024-08-06",
        "openai_chat",
        chat(1000, 500),
        {"region": "westus"},
        "1000*2.5e-6 + 500*1e-5",
    ),
    (
        "azure_ai mistral",
        "azure_ai",
        "mistral-large-latest",
        "openai_chat",
        chat(1000, 1000),
        {},
        "1000*2e-6 + 1000*6e-6",
    ),
    (
        "azure mistral",
        "azure",
        "mistral-large-latest",
        "openai_chat",
        chat(1000, 1000),
        {},
        "1000*8e-6 + 1000*2.4e-5",
    ),
    (
        "embedding",
        "openai",
        "text-embedding-3-small",
        "flat",
        {"input_tokens": 10000, "output_tokens": 0},
        {"request_type": "embedding"},
        "10000*2e-8",
    ),
    (
        "qwen tiered 300k",
        "dashscope",
        "qwen-flash",
        "flat",
        {"input_tokens": 300000, "output_tokens": 1000},
        {},
        "300000*2.5e-7 + 1000*2e-6",
    ),
    (
        "qwen tiered small",
        "dashscope",
        "qwen-flash",
        "flat",
        {"input_tokens": 1000, "output_tokens": 1000},
        {},
        "1000*5e-8 + 1000*4e-7",
    ),
    (
        "bedrock region",
        "bedrock",
        "anthropic.claude-v2:1",
        "flat",
        {"input_tokens": 1000, "output_tokens": 1000},
        {"region": "us-east-1"},
        "1000*8e-6 + 1000*2.4e-5",
    ),
    ("zero-cost model", "ollama", "codegeex4", "flat", {"input_tokens": 5000, "output_tokens": 5000}, {}, "0"),
]


def usd(expression: str) -> Fraction:
    """'1000*2.5e-6 + 500*1e-5' as an exact rational."""
    total = Fraction(0)
    for term in expression.split("+"):
        product = Fraction(1)
        for factor in term.split("*"):
            product *= Fraction(factor.strip())
        total += product
    return total


@pytest.fixture
def excerpt_imported():
    # Effective from a past date, so requests of the last second take these prices.
    call_command("import_model_pricing", str(EXCERPT), "--effective-from", "2025-01-01", "--no-progress")


def test_the_table_has_at_least_40_cases_across_providers_and_formats():
    assert len(CASES) >= 40
    assert {case[1] for case in CASES} >= {"openai", "anthropic", "gemini", "vertex_ai", "azure", "azure_ai"}
    assert {case[3] for case in CASES} == {"flat", "openai_chat", "openai_responses", "anthropic", "gemini"}


@pytest.mark.usefixtures("excerpt_imported")
@pytest.mark.parametrize(
    ("provider", "model", "usage_format", "usage", "extra", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_recorded_vendor_cost_equals_the_vendors_bill(
    service_client, user, provider, model, usage_format, usage, extra, expected
):
    fund(user, 100_000_000)
    event = usage_event(user, provider=provider, model=model, **extra)
    del event["input_tokens"], event["output_tokens"]
    event["request_started_at"] = (timezone.now() - timedelta(seconds=1)).isoformat()
    if usage_format == "flat":
        event.update(usage)
    else:
        event.update(usage_format=usage_format, usage=usage)

    response = service_client.post(RECORD, event, format="json")

    assert response.status_code == 201, response.json()
    row = TokenUsageLedger.objects.get()
    assert row.fee_units == (
        {"web_search": usage["server_tool_use"]["web_search_requests"]} if "server_tool_use" in usage else {}
    )
    vendor_cost = Fraction(row.vendor_cost)
    assert abs(vendor_cost - usd(expected)) <= TOLERANCE
    # Credits are charged from the exact cost: ceil(cost x 2.0 (free tier) / 0.001).
    exact_credits = usd(expected) * FREE_MARGIN / CREDIT_USD
    assert response.json()["credits_deducted"] == -(-exact_credits.numerator // exact_credits.denominator)
