"""A LiteLLM callback that bills chat completions in credits: reserve before, record after, release on failure.

Where each step runs (LiteLLM's own hooks; the README's LiteLLM section says the same):
- `litellm.acompletion` (streamed or not) and the proxy's router: `async_pre_call_deployment_hook`
  reserves; LiteLLM lets its exception reach the caller, so a refusal stops the call.
- The LiteLLM proxy: `async_pre_call_hook` reserves for the user the API key belongs to; its
  exception's `status_code` (402) is what the proxy answers.
- `litellm.completion` (synchronous): LiteLLM swallows every exception of its synchronous pre-call
  logging hooks, so no callback can stop the call. `CreditBilling.completion(...)` reserves, then calls
  `litellm.completion`; a plain `litellm.completion` is still recorded, without a hold.
- After the call, LiteLLM's success event records it with the response's own usage object (for a
  stream, the assembled response); its failure event releases the hold.

Every step is keyed on LiteLLM's `litellm_call_id`: the backend's `request_id` is that id when it is
a UUID, else a UUID5 of it, and the hold id is a UUID5 of the request id, so a retried call reserves
and records once.
"""

import asyncio
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import litellm
from litellm.integrations.custom_logger import CustomLogger

from rephlo_litellm.client import BillingBackend, BillingError, BillingUnavailable

logger = logging.getLogger("rephlo_litellm")

# Names a call id that is not itself a UUID; fixed so that every gateway derives the same request id.
CALL_ID_NAMESPACE = uuid.UUID("5f0b8f36-5a47-4a9c-9d3e-6f1d2e7c9a10")
BILLED_CALL_TYPES = frozenset({"completion", "acompletion"})
USER_ID_KEY = "billing_user_id"
# A record the backend could not take is sent again (it is idempotent on its request id), after
# RECORD_RETRY_SECONDS, then twice that.
RECORD_ATTEMPTS = 3
RECORD_RETRY_SECONDS = 0.5
# LiteLLM's provider names that the backend's price book spells differently.
PROVIDER_NAMES = {"gemini": "google", "text-completion-openai": "openai"}


def request_id_for(call_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(call_id)
    except ValueError:
        return uuid.uuid5(CALL_ID_NAMESPACE, call_id)


def hold_id_for(request_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(request_id, "hold")


def user_id_from(value) -> int | None:
    """A backend user id (a positive integer, or its digits as text), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    return None


def _call_type(call_type) -> str:
    return getattr(call_type, "value", call_type) or ""


def _utc(moment: datetime) -> str:
    # LiteLLM stamps calls with naive local times.
    return moment.astimezone(UTC).isoformat()


def usage_fields(usage: dict) -> dict:
    """The tokens of a usage/record body: LiteLLM's usage object as it is (OpenAI's chat shape), or, when
    it reports prompt-cache writes, which that shape cannot say, the flat fields with the same meaning."""
    written = usage.get("cache_creation_input_tokens") or 0
    if not written:
        return {"usage_format": "openai_chat", "usage": usage}
    # LiteLLM counts cache reads and writes inside prompt_tokens, as the flat input_tokens does.
    input_details = usage.get("prompt_tokens_details") or {}
    output_details = usage.get("completion_tokens_details") or {}
    return {
        "usage_format": "flat",
        "input_tokens": usage["prompt_tokens"],
        "output_tokens": usage["completion_tokens"],
        "cached_input_tokens": input_details.get("cached_tokens") or 0,
        "cache_write_tokens": written,
        "audio_input_tokens": input_details.get("audio_tokens") or 0,
        "reasoning_tokens": output_details.get("reasoning_tokens") or 0,
        "audio_output_tokens": output_details.get("audio_tokens") or 0,
    }


@dataclass(frozen=True)
class Reservation:
    user_id: int
    request_id: uuid.UUID
    hold_id: uuid.UUID
    credits: int


class CreditBilling(CustomLogger):
    """Reserves, records and releases credits on the billing backend for LiteLLM chat completions.

    The user billed is `metadata["billing_user_id"]` of the call, else its OpenAI `user` field when that
    is a backend user id; on the proxy, the API key's `metadata.billing_user_id`, else its `user_id`
    (never the request body). A call with no billable user is refused.

    The hold is an estimate (see `estimate_credits`); the record charges what the backend computes from
    the usage LiteLLM reports, and frees the rest of the hold.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        service_token: str | None = None,
        timeout: float | None = None,
        default_max_tokens: int = 4096,
        estimate_margin: Decimal = Decimal("2.0"),
        credit_value_usd: Decimal = Decimal("0.001"),
        fallback_hold_credits: int = 1000,
        provider_names: dict[str, str] | None = None,
        backend: BillingBackend | None = None,
    ):
        super().__init__()
        self.backend = backend or BillingBackend(base_url=base_url, service_token=service_token, timeout=timeout)
        self.default_max_tokens = default_max_tokens
        self.estimate_margin = Decimal(estimate_margin)
        self.credit_value_usd = Decimal(credit_value_usd)
        self.fallback_hold_credits = fallback_hold_credits
        self.provider_names = {**PROVIDER_NAMES, **(provider_names or {})}
        # The holds of calls in flight, by call id: success and failure events of this process find
        # theirs here (a hold left behind by a crash expires on the backend).
        self._reservations: dict[str, Reservation] = {}
        self._lock = threading.Lock()

    # The estimate

    def estimate_credits(self, *, model: str, messages: list, max_tokens: int | None) -> int:
        """Credits to hold for a call: the prompt's tokens (LiteLLM's token counter) plus `max_tokens`
        (or `default_max_tokens`), priced at LiteLLM's price map for the model, times `estimate_margin`
        (2.0, the highest margin the backend's tiers use), in credits of `credit_value_usd`, rounded up.
        A model missing from LiteLLM's map holds `fallback_hold_credits`."""
        price = litellm.model_cost.get(model) or litellm.model_cost.get(model.split("/", 1)[-1]) or {}
        input_price, output_price = price.get("input_cost_per_token"), price.get("output_cost_per_token")
        if input_price is None or output_price is None:
            return self.fallback_hold_credits
        prompt_tokens = litellm.token_counter(model=model, messages=messages)
        output_tokens = max_tokens if max_tokens is not None else self.default_max_tokens
        vendor_cost = prompt_tokens * Decimal(str(input_price)) + output_tokens * Decimal(str(output_price))
        return max(1, math.ceil(vendor_cost * self.estimate_margin / self.credit_value_usd))

    def _reservation(self, request: dict, user_id: int | None) -> tuple[Reservation, dict]:
        """The reservation of a call (from its request kwargs) and the body of usage/reserve/."""
        if user_id is None:
            metadata = request.get("metadata") or {}
            user_id = user_id_from(metadata.get(USER_ID_KEY)) or user_id_from(request.get("user"))
        if user_id is None:
            raise BillingError(
                f"No user to bill: pass metadata={{'{USER_ID_KEY}': <user id>}} or user=<user id>.",
                code="billing_user_missing",
            )
        credits = self.estimate_credits(
            model=request["model"],
            messages=request.get("messages") or [],
            max_tokens=request.get("max_tokens") or request.get("max_completion_tokens"),
        )
        request_id = request_id_for(request["litellm_call_id"])
        reservation = Reservation(
            user_id=user_id, request_id=request_id, hold_id=hold_id_for(request_id), credits=credits
        )
        body = {"user_id": user_id, "estimated_credits": credits, "hold_id": str(reservation.hold_id)}
        return reservation, body

    def _held(self, call_id: str, reservation: Reservation) -> Reservation:
        with self._lock:
            self._reservations[call_id] = reservation
        logger.info("Held %s credits for user %s (call %s).", reservation.credits, reservation.user_id, call_id)
        return reservation

    def _reserved(self, call_id: str) -> bool:
        with self._lock:
            return call_id in self._reservations

    def reserve(self, request: dict, *, user_id: int | None = None) -> Reservation:
        """Holds the estimate of a call; raises CreditsRefused (402) when it cannot be held."""
        reservation, body = self._reservation(request, user_id)
        self.backend.post("usage/reserve/", body)
        return self._held(request["litellm_call_id"], reservation)

    async def areserve(self, request: dict, *, user_id: int | None = None) -> Reservation:
        reservation, body = self._reservation(request, user_id)
        await self.backend.apost("usage/reserve/", body)
        return self._held(request["litellm_call_id"], reservation)

    # Before the call

    async def async_pre_call_deployment_hook(self, kwargs: dict, call_type):
        if _call_type(call_type) not in BILLED_CALL_TYPES or self._reserved(kwargs["litellm_call_id"]):
            return None  # on the proxy, async_pre_call_hook has reserved this call already
        if kwargs.get("proxy_server_request") is not None:
            # A proxy request's metadata and user come from its client: only the API key says whom to bill.
            raise BillingError("The proxy did not reserve this call for its API key.", code="billing_user_missing")
        await self.areserve(kwargs)
        return None

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict, call_type):
        if _call_type(call_type) not in BILLED_CALL_TYPES:
            return None
        key_metadata = getattr(user_api_key_dict, "metadata", None) or {}
        user_id = user_id_from(key_metadata.get(USER_ID_KEY)) or user_id_from(
            getattr(user_api_key_dict, "user_id", None)
        )
        if user_id is None:
            raise BillingError("This API key names no user to bill.", code="billing_user_missing")
        await self.areserve(data, user_id=user_id)
        return None

    def completion(self, **kwargs):
        """`litellm.completion` that reserves first: a refused reservation raises CreditsRefused and the
        model is never called."""
        kwargs.setdefault("litellm_call_id", str(uuid.uuid4()))
        self.reserve(kwargs)
        try:
            return litellm.completion(**kwargs)
        except Exception:
            self._release(kwargs["litellm_call_id"])
            raise

    # After the call

    def _record_body(self, kwargs: dict, response_obj, start_time, end_time) -> tuple[str, dict | None]:
        call_id = kwargs.get("litellm_call_id") or ""
        with self._lock:
            reservation = self._reservations.pop(call_id, None)
        params = kwargs.get("litellm_params") or {}
        usage = getattr(response_obj, "usage", None)
        if usage is None:
            logger.warning("Call %s reported no usage: nothing recorded.", call_id)
            return call_id, None
        if reservation is None:
            metadata = params.get("metadata") or {}
            user_id = user_id_from(metadata.get(USER_ID_KEY)) or user_id_from(kwargs.get("user"))
            if user_id is None:
                logger.warning("Call %s names no user to bill: nothing recorded.", call_id)
                return call_id, None
        else:
            user_id = reservation.user_id
        provider = params.get("custom_llm_provider") or kwargs.get("custom_llm_provider") or "openai"
        body = {
            "request_id": str(reservation.request_id if reservation else request_id_for(call_id)),
            "user_id": user_id,
            "provider": self.provider_names.get(provider, provider),
            "model": kwargs["model"],
            **usage_fields(usage.model_dump(exclude_none=True)),
            "request_type": "chat",
            "request_started_at": _utc(start_time),
            "request_completed_at": _utc(end_time),
        }
        if reservation is not None:
            body["hold_id"] = str(reservation.hold_id)
        return call_id, body

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        if (kwargs.get("litellm_params") or {}).get("acompletion"):
            return  # async_log_success_event records async calls
        call_id, body = self._record_body(kwargs, response_obj, start_time, end_time)
        if body is None:
            return
        try:
            answer = self._send_record(body)
        except BillingError as error:
            self._record_failed(call_id, body, error)
            if "hold_id" in body:
                self._release_hold(call_id, body["hold_id"])
        else:
            self._recorded(call_id, answer)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        call_id, body = self._record_body(kwargs, response_obj, start_time, end_time)
        if body is None:
            return
        try:
            answer = await self._asend_record(body)
        except BillingError as error:
            self._record_failed(call_id, body, error)
            if "hold_id" in body:
                await self._arelease_hold(call_id, body["hold_id"])
        else:
            self._recorded(call_id, answer)

    def _send_record(self, body: dict) -> dict:
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                return self.backend.post("usage/record/", body)
            except BillingUnavailable:
                if attempt == RECORD_ATTEMPTS:
                    raise
                time.sleep(RECORD_RETRY_SECONDS * attempt)

    async def _asend_record(self, body: dict) -> dict:
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                return await self.backend.apost("usage/record/", body)
            except BillingUnavailable:
                if attempt == RECORD_ATTEMPTS:
                    raise
                await asyncio.sleep(RECORD_RETRY_SECONDS * attempt)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._release(kwargs.get("litellm_call_id") or "")

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        call_id = kwargs.get("litellm_call_id") or ""
        with self._lock:
            reservation = self._reservations.pop(call_id, None)
        # A refused reservation also ends here, with nothing held.
        if reservation is not None:
            await self._arelease_hold(call_id, str(reservation.hold_id))

    def _release(self, call_id: str) -> None:
        with self._lock:
            reservation = self._reservations.pop(call_id, None)
        if reservation is not None:
            self._release_hold(call_id, str(reservation.hold_id))

    def _release_hold(self, call_id: str, hold_id: str) -> None:
        try:
            self.backend.post("usage/release/", {"hold_id": hold_id})
        except BillingError as error:
            _release_failed(call_id, error)

    async def _arelease_hold(self, call_id: str, hold_id: str) -> None:
        try:
            await self.backend.apost("usage/release/", {"hold_id": hold_id})
        except BillingError as error:
            _release_failed(call_id, error)

    @staticmethod
    def _recorded(call_id: str, answer: dict) -> None:
        logger.info("Recorded call %s: %s credits.", call_id, answer.get("credits_deducted"))

    @staticmethod
    def _record_failed(call_id: str, body: dict, error: BillingError) -> None:
        # A success callback cannot fail the call that already happened: the error is logged for follow-up.
        logger.error(
            "Could not record call %s for user %s (%s): %s", call_id, body["user_id"], error.code, error.detail
        )


def _release_failed(call_id: str, error: BillingError) -> None:
    # The hold expires on the backend after CREDIT_HOLD_TTL.
    logger.warning("Could not release the hold of call %s (%s): %s", call_id, error.code, error.detail)
