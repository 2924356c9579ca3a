"""Usage in the vendor's own words: usage objects and the flat fields, normalized into one canonical
breakdown, validated, priced once per token, and shown in me/usage/."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credits.models import TokenUsageLedger
from credits.tests.conftest import fund, usage_event
from credits.usage_objects import TokenBreakdown, UsageObjectError, breakdown_from_usage

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]

RECORD = "/api/v1/usage/record/"
ME_USAGE = "/api/v1/me/usage/"


def vendor_event(user, usage_format: str, usage: dict, **overrides) -> dict:
    event = usage_event(user, **overrides)
    del event["input_tokens"], event["output_tokens"]
    return {**event, "usage_format": usage_format, "usage": usage}


def test_openai_usage_with_cached_tokens_charges_each_token_once(service_client, user):
    # given LiteLLM's / OpenAI's usage: prompt_tokens include the 800 cached ones
    fund(user, 10_000)
    usage = {"prompt_tokens": 1000, "completion_tokens": 2000, "prompt_tokens_details": {"cached_tokens": 800}}

    response = service_client.post(RECORD, vendor_event(user, "openai_chat", usage), format="json")

    # then 200 fresh + 800 cache reads (no cache price on the seed's gpt-4o: the input price) + 2000 out:
    # the 0.035 USD of 1000 in + 2000 out, never more
    assert response.status_code == 201, response.json()
    assert response.json()["vendor_cost"] == "0.0350000000"
    row = TokenUsageLedger.objects.get()
    assert (row.input_tokens, row.cached_input_tokens, row.output_tokens, row.total_tokens) == (1000, 800, 2000, 3000)


def test_flat_cached_tokens_are_part_of_input_tokens(service_client, user):
    fund(user, 10_000)
    event = usage_event(user, model="claude-3-5-sonnet", provider="anthropic", cached_input_tokens=600)

    response = service_client.post(RECORD, event, format="json")

    # 400 fresh x 0.003 + 600 cached x 0.0003 + 2000 x 0.015 per 1k = 0.0313800
    assert response.json()["vendor_cost"] == "0.0313800000"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"input_tokens": 100, "cached_input_tokens": 101}, "cached_input_tokens"),
        ({"input_tokens": 100, "cached_input_tokens": 60, "cache_write_tokens": 41}, "cached_input_tokens"),
        ({"output_tokens": 10, "reasoning_tokens": 11}, "reasoning_tokens"),
        ({"input_tokens": 10, "audio_input_tokens": 11}, "audio_input_tokens"),
    ],
)
def test_parts_larger_than_their_total_are_a_400_naming_the_field(service_client, user, fields, named):
    fund(user, 10_000)

    response = service_client.post(RECORD, usage_event(user, **fields), format="json")

    assert response.status_code == 400
    assert named in response.json()["errors"]
    assert TokenUsageLedger.objects.count() == 0


@pytest.mark.parametrize(
    ("usage_format", "usage", "named"),
    [
        ("openai_chat", {"completion_tokens": 5}, "usage.prompt_tokens"),
        ("openai_chat", {"prompt_tokens": 5, "completion_tokens": -1}, "usage.completion_tokens"),
        (
            "openai_chat",
            {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 6}},
            "usage.prompt_tokens_details",
        ),
        ("openai_responses", {"input_tokens": "many", "output_tokens": 1}, "usage.input_tokens"),
        (
            "anthropic",
            {
                "input_tokens": 1,
                "output_tokens": 1,
                "cache_creation_input_tokens": 10,
                "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 3},
            },
            "usage.cache_creation",
        ),
        ("gemini", {"candidatesTokenCount": 1}, "usage.promptTokenCount"),
        ("gemini", {"promptTokenCount": 5, "cachedContentTokenCount": 9}, "usage.cachedContentTokenCount"),
        ("gemini", "not an object", "usage"),
    ],
)
def test_a_malformed_usage_object_is_a_400_naming_the_nested_field(service_client, user, usage_format, usage, named):
    fund(user, 10_000)

    response = service_client.post(RECORD, vendor_event(user, usage_format, usage), format="json")

    assert response.status_code == 400
    assert named in response.json()["errors"], response.json()
    assert TokenUsageLedger.objects.count() == 0


def test_flat_fields_beside_a_usage_object_are_refused(service_client, user):
    event = {**vendor_event(user, "anthropic", {"input_tokens": 1, "output_tokens": 1}), "input_tokens": 5}

    response = service_client.post(RECORD, event, format="json")

    assert response.status_code == 400
    assert "input_tokens" in response.json()["errors"]


def test_a_usage_object_needs_its_format_named(service_client, user):
    event = {**usage_event(user), "usage": {"prompt_tokens": 1, "completion_tokens": 1}}

    response = service_client.post(RECORD, event, format="json")

    assert response.status_code == 400
    assert "usage_format" in response.json()["errors"]


def test_a_fee_the_model_has_no_price_for_is_a_422(service_client, user):
    fund(user, 10_000)

    response = service_client.post(RECORD, usage_event(user, fee_units={"web_search": 1}), format="json")

    assert response.status_code == 422
    assert (response.json()["code"], response.json()["fee"]) == ("unpriced_fee", "web_search")
    assert TokenUsageLedger.objects.count() == 0


def test_me_usage_shows_the_canonical_breakdown(service_client, user_client, user):
    fund(user, 100_000)
    usage = {
        "input_tokens": 200,
        "output_tokens": 700,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
    }
    service_client.post(
        RECORD,
        vendor_event(user, "anthropic", usage, provider="anthropic", model="claude-3-5-sonnet"),
        format="json",
    )

    (row,) = user_client.get(ME_USAGE).json()["results"]

    assert row["breakdown"] == {
        "input": 200,
        "cache_read": 1000,
        "cache_write_5m": 100,
        "cache_write_1h": 200,
        "audio_input": 0,
        "output": 700,
        "reasoning": 0,
        "audio_output": 0,
        "image_output": 0,
    }
    assert (row["input_tokens"], row["output_tokens"], row["usage_format"], row["service_tier"]) == (
        1500,
        700,
        "anthropic",
        "standard",
    )


COUNTS = st.integers(min_value=0, max_value=10**7)


@given(prompt=COUNTS, completion=COUNTS, data=st.data())
def test_openai_chat_normalization_keeps_every_token_once(prompt, completion, data):
    cached = data.draw(st.integers(min_value=0, max_value=prompt))
    audio_in = data.draw(st.integers(min_value=0, max_value=prompt - cached))
    reasoning = data.draw(st.integers(min_value=0, max_value=completion))
    audio_out = data.draw(st.integers(min_value=0, max_value=completion - reasoning))
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": audio_in},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": audio_out},
    }

    breakdown, fees = breakdown_from_usage("openai_chat", usage)

    assert (breakdown.input_total, breakdown.output_total, fees) == (prompt, completion, {})
    assert min(breakdown.as_dict().values()) >= 0
    assert (breakdown.cache_read, breakdown.audio_input, breakdown.reasoning) == (cached, audio_in, reasoning)


def test_anthropic_and_openai_shapes_of_one_request_give_one_breakdown():
    anthropic = {"input_tokens": 200, "cache_read_input_tokens": 800, "output_tokens": 50}
    openai = {"prompt_tokens": 1000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 800}}

    assert breakdown_from_usage("anthropic", anthropic)[0] == breakdown_from_usage("openai_chat", openai)[0]
    assert breakdown_from_usage("anthropic", anthropic)[0] == TokenBreakdown(input=200, cache_read=800, output=50)


def test_usage_object_errors_name_the_field():
    with pytest.raises(UsageObjectError) as refused:
        breakdown_from_usage("openai_responses", {"input_tokens": 1, "output_tokens": True})

    assert refused.value.field == "usage.output_tokens"
