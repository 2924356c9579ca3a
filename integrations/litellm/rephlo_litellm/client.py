"""The three service calls the plug-in makes: usage/reserve/, usage/record/ and usage/release/.

Answers are RFC 7807 problems on failure; a 402 (credits or budget) becomes `CreditsRefused`, an
unreachable backend or an unexpected answer `BillingUnavailable`. The service token is sent in the
Authorization header only and never appears in an exception or a log line.
"""

import os

import httpx

DEFAULT_TIMEOUT_SECONDS = 5.0


class BillingError(Exception):
    """A call the billing backend did not allow or could not answer. `status_code` is what the
    LiteLLM proxy answers its client with; `code` is the backend's problem code."""

    status_code = 400

    def __init__(self, detail: str, *, code: str, problem: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.problem = problem or {}


class CreditsRefused(BillingError):
    """The user's balance (or monthly budget) cannot cover the call: it was not made."""

    status_code = 402


class BillingUnavailable(BillingError):
    """The billing backend could not be reached or gave an unexpected answer: the call was not made."""

    status_code = 503


class BillingBackend:
    """The backend's usage endpoints, called with a service token holding the `usage:write` scope.

    `base_url` and `service_token` default to REPHLO_BILLING_URL and REPHLO_SERVICE_TOKEN,
    `timeout` (seconds, per request) to REPHLO_BILLING_TIMEOUT or 5."""

    def __init__(self, *, base_url: str | None = None, service_token: str | None = None, timeout=None):
        base_url = base_url or os.environ.get("REPHLO_BILLING_URL")
        service_token = service_token or os.environ.get("REPHLO_SERVICE_TOKEN")
        if not base_url or not service_token:
            raise ValueError(
                "Set the billing backend's URL and a service token (REPHLO_BILLING_URL, REPHLO_SERVICE_TOKEN)."
            )
        if timeout is None:
            timeout = float(os.environ.get("REPHLO_BILLING_TIMEOUT", DEFAULT_TIMEOUT_SECONDS))
        self.api_url = base_url.rstrip("/") + "/api/v1/"
        self._headers = {"Authorization": f"Bearer {service_token}", "Accept": "application/json"}
        self._timeout = httpx.Timeout(timeout)
        # One pooled client for the synchronous calls (thread-safe); async calls open their own,
        # since an httpx.AsyncClient belongs to the event loop that created it.
        self._client = httpx.Client(base_url=self.api_url, headers=self._headers, timeout=self._timeout)

    def __repr__(self) -> str:
        return f"BillingBackend({self.api_url!r})"

    def post(self, path: str, body: dict) -> dict:
        try:
            response = self._client.post(path, json=body)
        except httpx.HTTPError as error:
            raise _unreachable(path, error) from None
        return _answer(path, response)

    async def apost(self, path: str, body: dict) -> dict:
        try:
            async with httpx.AsyncClient(base_url=self.api_url, headers=self._headers, timeout=self._timeout) as client:
                response = await client.post(path, json=body)
        except httpx.HTTPError as error:
            raise _unreachable(path, error) from None
        return _answer(path, response)


def _unreachable(path: str, error: httpx.HTTPError) -> BillingUnavailable:
    # The exception's text only: its request (and so the Authorization header) stays out of the message.
    return BillingUnavailable(f"The billing backend did not answer {path}: {type(error).__name__}.", code="unreachable")


def _answer(path: str, response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if response.is_success:
        return body
    detail = body.get("detail") or f"{path} answered {response.status_code}."
    code = body.get("code") or f"http_{response.status_code}"
    if response.status_code == 402:
        raise CreditsRefused(detail, code=code, problem=body)
    if response.status_code >= 500 or response.status_code in (401, 403):
        raise BillingUnavailable(detail, code=code, problem=body)
    raise BillingError(detail, code=code, problem=body)
