"""The LiteLLM plug-in against a running backend: LiteLLM's offline `mock_response` plays the model."""

import asyncio
import importlib
import math
import time
import uuid
from decimal import Decimal

import httpx
import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import UserAPIKeyAuth
from rephlo_litellm import BillingBackend, BillingError, BillingUnavailable, CreditBilling, CreditsRefused
from rephlo_litellm.callback import hold_id_for, request_id_for

from conftest import access_token_for
from credits.models import CreditHold, HoldStatus, TokenUsageLedger, UserCreditBalance
from credits.services import credit_grant, pricing_catalog_seed

# The live server answers LiteLLM's background events while the test reads: concurrent writers that
# SQLite's table locks turn away.
pytestmark = pytest.mark.postgres

# About 1,500 prompt tokens and 300 output tokens: enough for the price to show in the credits.
PROMPT = [{"role": "user", "content": "Summarize the quarterly report. " * 300}]
ANSWER = "Revenue grew. " * 100


def answer() -> litellm.ModelResponse:
    """A whole mocked response with the usage a vendor would report (a streamed mock counts its own)."""
    return litellm.ModelResponse(
        model="gpt-4o",
        choices=[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ANSWER}}],
        usage={"prompt_tokens": 1503, "completion_tokens": 301, "total_tokens": 1804},
    )


class ModelCalls(CustomLogger):
    """Notes every call that reached the model (LiteLLM's pre-API-call event, which the mock fires too)."""

    def __init__(self):
        super().__init__()
        self.call_ids = []

    def log_pre_api_call(self, model, messages, kwargs):
        self.call_ids.append(kwargs.get("litellm_call_id"))


@pytest.fixture
def backend(live_server, service_token):
    pricing_catalog_seed()
    return {"url": live_server.url, "token": service_token("usage:write")}


@pytest.fixture
def model_calls():
    return ModelCalls()


@pytest.fixture
def billing(backend, model_calls):
    plugin = CreditBilling(base_url=backend["url"], service_token=backend["token"], timeout=10)
    litellm.callbacks = [plugin, model_calls]
    yield plugin
    for callback in (plugin, model_calls):
        litellm.logging_callback_manager.remove_callback_from_all_lists(callback)


def seeded_gpt_4o_credits(usage) -> int:
    """SPEC 2 on the seeded gpt-4o price (0.005 / 0.015 USD per 1k) at the free tier's margin 2.0."""
    vendor_cost = (usage.prompt_tokens * Decimal("0.005") + usage.completion_tokens * Decimal("0.015")) / 1000
    return math.ceil(vendor_cost * 2 / Decimal("0.001"))


def balance_of(user) -> int:
    return UserCreditBalance.objects.get(user=user).amount


def hold_of(call_id: str) -> CreditHold:
    return CreditHold.objects.get(hold_id=hold_id_for(request_id_for(call_id)))


def wait_for(condition, timeout: float = 60.0):
    """Success and failure events of synchronous calls run on LiteLLM's background threads."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "the plug-in did not report the call in time"
        time.sleep(0.05)
    return result


async def await_for(condition, timeout: float = 60.0):
    """Async success and failure events run as tasks of the caller's event loop: wait inside it."""
    deadline = time.monotonic() + timeout
    while not (result := await condition()):
        assert time.monotonic() < deadline, "the plug-in did not report the call in time"
        await asyncio.sleep(0.05)
    return result


async def my_usage(backend_url: str, user_token: str) -> list[dict]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {user_token}"}) as client:
        response = await client.get(f"{backend_url}/api/v1/me/usage/")
    assert response.status_code == 200, response.text
    return response.json()["results"]


async def my_available(backend, user) -> int:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {backend['token']}"}) as client:
        response = await client.post(
            f"{backend['url']}/api/v1/usage/check/", json={"user_id": user.pk, "estimated_credits": 0}
        )
    assert response.status_code == 200, response.text
    return response.json()["available"]


def test_an_async_completion_is_reserved_recorded_at_the_seeded_price_and_shown_in_me_usage(
    billing, backend, user, model_calls
):
    # given a user with 10,000 credits
    credit_grant(user=user, amount=10_000, source="bonus", reason="test funds")
    call_id, user_token = str(uuid.uuid4()), access_token_for(user)

    # when LiteLLM completes a chat for them
    async def scenario():
        response = await litellm.acompletion(
            model="gpt-4o",
            messages=PROMPT,
            max_tokens=500,
            mock_response=answer(),
            metadata={"billing_user_id": user.pk},
            litellm_call_id=call_id,
        )
        return response, await await_for(lambda: my_usage(backend["url"], user_token))

    response, usage_rows = asyncio.run(scenario())

    # then the call is recorded under its call id, at the backend's price for the tokens LiteLLM reported
    expected = seeded_gpt_4o_credits(response.usage)
    assert expected > 10
    assert [(row["request_id"], row["model_name"], row["provider"]) for row in usage_rows] == [
        (call_id, "gpt-4o", "openai")
    ]
    assert usage_rows[0]["input_tokens"] == response.usage.prompt_tokens
    assert usage_rows[0]["output_tokens"] == response.usage.completion_tokens
    assert usage_rows[0]["credits_deducted"] == expected
    assert usage_rows[0]["usage_format"] == "openai_chat"
    assert balance_of(user) == 10_000 - expected
    # the hold made before the call was captured by the record
    hold = hold_of(call_id)
    assert hold.status == HoldStatus.CAPTURED
    assert hold.amount == billing.estimate_credits(model="gpt-4o", messages=PROMPT, max_tokens=500)
    assert model_calls.call_ids == [call_id]


def test_a_streamed_async_completion_is_recorded_from_the_assembled_response(billing, backend, user):
    # given a user with 10,000 credits
    credit_grant(user=user, amount=10_000, source="bonus", reason="test funds")
    call_id, user_token = str(uuid.uuid4()), access_token_for(user)

    # when LiteLLM streams a chat for them
    async def scenario():
        stream = await litellm.acompletion(
            model="gpt-4o",
            messages=PROMPT,
            stream=True,
            mock_response=ANSWER,
            user=str(user.pk),
            litellm_call_id=call_id,
        )
        chunks = [chunk async for chunk in stream]
        return chunks, await await_for(lambda: my_usage(backend["url"], user_token))

    chunks, usage_rows = asyncio.run(scenario())

    # then the usage of the whole stream is recorded once, at the seeded price
    assembled = litellm.stream_chunk_builder(chunks, messages=PROMPT)
    assert assembled.usage.completion_tokens > 50
    assert [(row["request_id"], row["output_tokens"]) for row in usage_rows] == [
        (call_id, assembled.usage.completion_tokens)
    ]
    assert usage_rows[0]["credits_deducted"] == seeded_gpt_4o_credits(assembled.usage)
    assert balance_of(user) == 10_000 - usage_rows[0]["credits_deducted"]
    assert hold_of(call_id).status == HoldStatus.CAPTURED


def test_prompt_cache_writes_reported_by_litellm_are_priced_at_the_cache_write_price(billing, backend, user):
    # given a user with 10,000 credits, and a Claude answer that read 1,500 prompt tokens from the cache
    # and wrote 1,000 to it (LiteLLM counts both inside prompt_tokens)
    credit_grant(user=user, amount=10_000, source="bonus", reason="test funds")
    user_token = access_token_for(user)
    cached_answer = litellm.ModelResponse(
        model="claude-3-5-sonnet",
        choices=[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ANSWER}}],
        usage=litellm.Usage(
            prompt_tokens=3000,
            completion_tokens=200,
            total_tokens=3200,
            cache_creation_input_tokens=1000,
            cache_read_input_tokens=1500,
        ),
    )

    # when the call is made
    async def scenario():
        await litellm.acompletion(
            model="anthropic/claude-3-5-sonnet", messages=PROMPT, mock_response=cached_answer, user=str(user.pk)
        )
        return await await_for(lambda: my_usage(backend["url"], user_token))

    (row,) = asyncio.run(scenario())

    # then each part is priced once at its seeded price: 500 fresh x 0.003, 1,000 written x 0.00075,
    # 1,500 read x 0.0003 and 200 out x 0.015 per 1k = 0.0057 USD, x 2.0 = 11.4, so 12 credits
    assert (row["provider"], row["model_name"]) == ("anthropic", "claude-3-5-sonnet")
    assert {key: row["breakdown"][key] for key in ("input", "cache_read", "cache_write_5m", "output")} == {
        "input": 500,
        "cache_read": 1500,
        "cache_write_5m": 1000,
        "output": 200,
    }
    assert row["credits_deducted"] == 12


class BackendDownForAWhile(BillingBackend):
    """The backend, whose usage/record/ answers 503 the first `outages` times."""

    def __init__(self, *, outages: int, **config):
        super().__init__(**config)
        self.outages = outages

    async def apost(self, path: str, body: dict) -> dict:
        if path == "usage/record/" and self.outages:
            self.outages -= 1
            raise BillingUnavailable("The database is unavailable; retry shortly.", code="database_unavailable")
        return await super().apost(path, body)


def test_a_record_the_backend_turns_away_for_a_moment_is_sent_again(backend, user, model_calls):
    # given a user with 10,000 credits and a backend that cannot take the first two records
    credit_grant(user=user, amount=10_000, source="bonus", reason="test funds")
    user_token = access_token_for(user)
    flaky = BackendDownForAWhile(outages=2, base_url=backend["url"], service_token=backend["token"], timeout=10)
    plugin = CreditBilling(backend=flaky)
    litellm.callbacks = [plugin, model_calls]

    # when a call is made
    async def scenario():
        await litellm.acompletion(
            model="gpt-4o", messages=PROMPT, max_tokens=500, mock_response=answer(), user=str(user.pk)
        )
        return await await_for(lambda: my_usage(backend["url"], user_token))

    try:
        (row,) = asyncio.run(scenario())
    finally:
        for callback in (plugin, model_calls):
            litellm.logging_callback_manager.remove_callback_from_all_lists(callback)

    # then the third attempt records it, once, capturing its hold
    assert flaky.outages == 0
    assert row["credits_deducted"] == seeded_gpt_4o_credits(answer().usage)
    assert list(CreditHold.objects.values_list("status", flat=True)) == [HoldStatus.CAPTURED]
    assert TokenUsageLedger.objects.count() == 1


def test_a_synchronous_completion_through_the_plugin_is_reserved_and_recorded(billing, user, model_calls):
    # given a user with 10,000 credits
    credit_grant(user=user, amount=10_000, source="bonus", reason="test funds")
    call_id, stream_call_id = str(uuid.uuid4()), str(uuid.uuid4())

    # when a synchronous completion and a synchronous stream go through the plug-in
    response = billing.completion(
        model="gpt-4o",
        messages=PROMPT,
        max_tokens=500,
        mock_response=answer(),
        user=str(user.pk),
        litellm_call_id=call_id,
    )
    stream = billing.completion(
        model="gpt-4o",
        messages=PROMPT,
        stream=True,
        mock_response=ANSWER,
        user=str(user.pk),
        litellm_call_id=stream_call_id,
    )
    assembled = litellm.stream_chunk_builder(list(stream), messages=PROMPT)

    # then both are recorded (by LiteLLM's background success events) at the seeded price, holds captured
    wait_for(lambda: TokenUsageLedger.objects.filter(user=user).count() == 2)
    credits = dict(TokenUsageLedger.objects.filter(user=user).values_list("request_id", "credits_deducted"))
    assert credits == {
        uuid.UUID(call_id): seeded_gpt_4o_credits(response.usage),
        uuid.UUID(stream_call_id): seeded_gpt_4o_credits(assembled.usage),
    }
    assert balance_of(user) == 10_000 - sum(credits.values())
    assert {hold_of(call_id).status, hold_of(stream_call_id).status} == {HoldStatus.CAPTURED}
    assert model_calls.call_ids == [call_id, stream_call_id]


def test_a_refused_reservation_stops_the_call_before_the_model_and_records_nothing(billing, backend, user, model_calls):
    # given a user with 5 credits, less than the estimate of the call
    credit_grant(user=user, amount=5, source="bonus", reason="test funds")

    # when they ask for a completion, asynchronously and synchronously
    async def scenario():
        with pytest.raises(CreditsRefused) as refused:
            await litellm.acompletion(
                model="gpt-4o", messages=PROMPT, max_tokens=500, mock_response=ANSWER, user=str(user.pk)
            )
        return refused.value

    async_refusal = asyncio.run(scenario())
    with pytest.raises(CreditsRefused) as sync_refusal:
        billing.completion(model="gpt-4o", messages=PROMPT, max_tokens=500, mock_response=ANSWER, user=str(user.pk))

    # then both are refused with the backend's 402 problem, the model is never called, nothing is written
    for refusal in (async_refusal, sync_refusal.value):
        assert (refusal.status_code, refusal.code) == (402, "insufficient_credits")
        assert refusal.problem["status"] == 402
    assert model_calls.call_ids == []
    assert not TokenUsageLedger.objects.exists()
    assert not CreditHold.objects.exists()
    assert balance_of(user) == 5


def test_a_failed_call_releases_its_hold(billing, backend, user):
    # given a user with 10,000 credits
    credit_grant(user=user, amount=10_000, source="bonus", reason="test funds")
    call_id, sync_call_id = str(uuid.uuid4()), str(uuid.uuid4())

    # when the model fails, for an async call and for a synchronous one
    async def scenario():
        with pytest.raises(litellm.InternalServerError):
            await litellm.acompletion(
                model="gpt-4o",
                messages=PROMPT,
                max_tokens=500,
                mock_response=Exception("the vendor is down"),
                user=str(user.pk),
                litellm_call_id=call_id,
            )
        return await await_for(lambda: _all_available(backend, user, 10_000))

    asyncio.run(scenario())
    with pytest.raises(litellm.InternalServerError):
        billing.completion(
            model="gpt-4o",
            messages=PROMPT,
            max_tokens=500,
            mock_response=Exception("the vendor is down"),
            user=str(user.pk),
            litellm_call_id=sync_call_id,
        )

    # then both holds are released, nothing is charged or recorded
    wait_for(lambda: hold_of(sync_call_id).status == HoldStatus.RELEASED)
    assert hold_of(call_id).status == HoldStatus.RELEASED
    assert not TokenUsageLedger.objects.exists()
    assert balance_of(user) == 10_000


async def _all_available(backend, user, amount: int) -> bool:
    return await my_available(backend, user) == amount


def test_the_same_call_id_twice_is_recorded_once(billing, backend, user, model_calls):
    # given a user with 10,000 credits
    credit_grant(user=user, amount=10_000, source="bonus", reason="test funds")
    user_token = access_token_for(user)

    # when a client retries a call under the same LiteLLM call id (not a UUID)
    async def scenario():
        for _ in range(2):
            await litellm.acompletion(
                model="gpt-4o",
                messages=PROMPT,
                max_tokens=500,
                mock_response=ANSWER,
                user=str(user.pk),
                litellm_call_id="client-retry-42",
            )
        rows = await await_for(lambda: my_usage(backend["url"], user_token))
        # the second success event has run too once nothing is held any more
        await await_for(lambda: _all_available(backend, user, rows[0]["balance_after"]))

    asyncio.run(scenario())

    # then both calls reached the model, but one usage row and one hold exist, under the UUID5 of the call id
    assert model_calls.call_ids == ["client-retry-42", "client-retry-42"]
    rows = list(TokenUsageLedger.objects.filter(user=user))
    assert [row.request_id for row in rows] == [request_id_for("client-retry-42")]
    assert balance_of(user) == 10_000 - rows[0].credits_deducted
    # The two success events race: the first recorded charges; if it went without the hold (the other
    # event had taken the reservation), the repeat that names the hold frees it. Nothing stays held.
    assert list(CreditHold.objects.values_list("status", flat=True)) in ([HoldStatus.CAPTURED], [HoldStatus.RELEASED])


def test_the_proxy_hook_bills_the_keys_user_and_refuses_with_402(billing, user, other_user):
    # given a funded user and one with no credits, each owning a proxy API key
    credit_grant(user=user, amount=10_000, source="bonus", reason="test funds")
    paying_key = UserAPIKeyAuth(user_id="litellm-internal-id", metadata={"billing_user_id": user.pk})
    broke_key = UserAPIKeyAuth(user_id=str(other_user.pk))

    def request(**extra) -> dict:
        return {"model": "gpt-4o", "messages": PROMPT, "max_tokens": 500, "litellm_call_id": str(uuid.uuid4()), **extra}

    # when the proxy runs its pre-call hook, the request body naming someone else to bill
    paid = request(metadata={"billing_user_id": other_user.pk})
    assert asyncio.run(billing.async_pre_call_hook(paying_key, None, paid, "acompletion")) is None
    with pytest.raises(CreditsRefused) as refused:
        asyncio.run(billing.async_pre_call_hook(broke_key, None, request(), "acompletion"))
    with pytest.raises(BillingError) as nobody:
        asyncio.run(billing.async_pre_call_hook(UserAPIKeyAuth(), None, request(), "acompletion"))

    # and a proxy request the pre-call hook did not reserve reaches the router's deployment hook
    with pytest.raises(BillingError) as unreserved:
        asyncio.run(
            billing.async_pre_call_deployment_hook(
                request(user=str(user.pk), proxy_server_request={"body": {}}), "acompletion"
            )
        )

    # then the key's user is held for, the broke one is answered 402, a key without a user 400, and the
    # request body alone never names whom to bill
    assert unreserved.value.code == "billing_user_missing"
    hold = hold_of(paid["litellm_call_id"])
    assert (hold.user_id, hold.status) == (user.pk, HoldStatus.HELD)
    assert (refused.value.status_code, refused.value.code) == (402, "insufficient_credits")
    assert (nobody.value.status_code, nobody.value.code) == (400, "billing_user_missing")
    assert CreditHold.objects.count() == 1


def test_a_call_naming_no_user_is_refused_before_the_model(billing, model_calls):
    with pytest.raises(BillingError) as refused:
        asyncio.run(litellm.acompletion(model="gpt-4o", messages=PROMPT, mock_response=ANSWER))

    assert refused.value.code == "billing_user_missing"
    assert model_calls.call_ids == []
    assert not CreditHold.objects.exists()


def test_an_unreachable_backend_refuses_the_call_without_revealing_the_token(model_calls, caplog):
    # given a plug-in pointed at a port nobody listens on
    plugin = CreditBilling(base_url="http://127.0.0.1:9", service_token="secret-service-token", timeout=1)
    litellm.callbacks = [plugin, model_calls]
    try:
        # when a call is made
        with pytest.raises(BillingUnavailable) as unavailable:
            asyncio.run(litellm.acompletion(model="gpt-4o", messages=PROMPT, mock_response=ANSWER, user="7"))
    finally:
        for callback in (plugin, model_calls):
            litellm.logging_callback_manager.remove_callback_from_all_lists(callback)

    # then it is refused (503 on a proxy) before the model, and the token is in neither the error nor the logs
    assert (unavailable.value.status_code, unavailable.value.code) == (503, "unreachable")
    assert model_calls.call_ids == []
    assert "secret-service-token" not in repr(unavailable.value.args) + repr(plugin.backend) + caplog.text


def test_the_proxy_module_configures_the_callback_from_the_environment(monkeypatch):
    monkeypatch.setenv("REPHLO_BILLING_URL", "https://billing.example.com/")
    monkeypatch.setenv("REPHLO_SERVICE_TOKEN", "token-from-the-environment")
    monkeypatch.setenv("REPHLO_BILLING_TIMEOUT", "2.5")

    proxy = importlib.import_module("rephlo_litellm.proxy")

    assert isinstance(proxy.credit_billing, CreditBilling)
    assert proxy.credit_billing.backend.api_url == "https://billing.example.com/api/v1/"
