"""A request's tokens in the vendor's own words, normalized into one canonical breakdown.

Pure: no database. The gateway sends either the flat fields of a usage event or the provider's usage
object verbatim with its format named (`usage_format`); both become a `TokenBreakdown` whose nine
components are disjoint, so every token is priced exactly once:

| component        | what it counts                                                      |
|------------------|---------------------------------------------------------------------|
| `input`          | input tokens read fresh: not from the cache, not written to it, not audio |
| `cache_read`     | input tokens read from the prompt cache                             |
| `cache_write_5m` | input tokens written to the prompt cache (the default, 5-minute TTL) |
| `cache_write_1h` | input tokens written to the prompt cache with a 1-hour TTL          |
| `audio_input`    | audio input tokens (not from the cache)                             |
| `output`         | text output tokens (not reasoning, audio or image)                  |
| `reasoning`      | reasoning ("thinking") output tokens                                |
| `audio_output`   | audio output tokens                                                 |
| `image_output`   | generated image tokens                                              |

The flat fields have one meaning (the one OpenAI, LiteLLM and Gemini use): `input_tokens` counts
every input token, cached or not; `cached_input_tokens`, `cache_write_tokens`,
`cache_write_1h_tokens` and `audio_input_tokens` are parts of it. `output_tokens` counts every
output token; `reasoning_tokens`, `audio_output_tokens` and `image_output_tokens` are parts of it.
"""

from functools import partial
from typing import NamedTuple

from billing_project.parsers import text_problem
from credits.models import UsageFormat

# The flat fields that are parts of input_tokens, then of output_tokens: (field, the component it fills).
FLAT_INPUT_PARTS = (
    ("cached_input_tokens", "cache_read"),
    ("cache_write_tokens", "cache_write_5m"),
    ("cache_write_1h_tokens", "cache_write_1h"),
    ("audio_input_tokens", "audio_input"),
)
FLAT_OUTPUT_PARTS = (
    ("reasoning_tokens", "reasoning"),
    ("audio_output_tokens", "audio_output"),
    ("image_output_tokens", "image_output"),
)
FLAT_FIELDS = ("input_tokens", "output_tokens") + tuple(name for name, _ in FLAT_INPUT_PARTS + FLAT_OUTPUT_PARTS)
TOTALS = {"input_tokens", "output_tokens"}

# No single count may exceed this; sums are bounded by their parts.
MAX_TOKENS = 2_000_000_000
MAX_FEE_UNITS = 1_000_000
FEE_NAME_LENGTH = 50


class TokenBreakdown(NamedTuple):
    """Disjoint token counts of one request (see the module's table); its fields are the
    COMPONENTS a price names. Immutable as a named tuple, which is made in a third of a frozen
    dataclass's time: a batch makes one per event."""

    input: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    audio_input: int = 0
    output: int = 0
    reasoning: int = 0
    audio_output: int = 0
    image_output: int = 0

    @property
    def input_total(self) -> int:
        """Every input token: what context-length tiers are measured on."""
        return self.input + self.cache_read + self.cache_write_5m + self.cache_write_1h + self.audio_input

    @property
    def output_total(self) -> int:
        return self.output + self.reasoning + self.audio_output + self.image_output

    def counts(self) -> tuple[int, ...]:
        """The counts in the order of COMPONENTS."""
        return tuple(self)

    def as_dict(self) -> dict[str, int]:
        return self._asdict()


# The token kinds a price gives a rate for, in the order of TokenBreakdown's counts.
COMPONENTS: tuple[str, ...] = TokenBreakdown._fields


class UsageObjectError(ValueError):
    """A usage object or flat fields that cannot be read; `field` names where (dotted for nested keys)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def _count(source: dict, key: str, where: str, *, required: bool = False) -> int:
    value = source.get(key) if isinstance(source, dict) else None
    if value is None:
        if required:
            raise UsageObjectError(where, "This field is required.")
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageObjectError(where, "A valid integer is required.")
    if value < 0:
        raise UsageObjectError(where, "Ensure this value is greater than or equal to 0.")
    if value > MAX_TOKENS:
        raise UsageObjectError(where, f"Ensure this value is less than or equal to {MAX_TOKENS}.")
    return value


def _object(source: dict, key: str, where: str) -> dict:
    value = source.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageObjectError(where, "Expected an object.")
    return value


def _parts_within(total: int, parts: dict[str, int], *, total_field: str, where: str) -> None:
    if sum(parts.values()) > total:
        named = " + ".join(parts)
        raise UsageObjectError(where, f"{named} may not exceed {total_field} ({sum(parts.values())} > {total}).")


def breakdown_from_flat(values: dict[str, int]) -> TokenBreakdown:
    """From the flat fields (already integers): the parts are taken out of the totals."""
    if values.keys() == TOTALS:  # most events
        return TokenBreakdown(input=values["input_tokens"], output=values["output_tokens"])
    input_parts = {name: values.get(name, 0) for name, _ in FLAT_INPUT_PARTS}
    output_parts = {name: values.get(name, 0) for name, _ in FLAT_OUTPUT_PARTS}
    _parts_within(values["input_tokens"], input_parts, total_field="input_tokens", where=_first_nonzero(input_parts))
    _parts_within(
        values["output_tokens"], output_parts, total_field="output_tokens", where=_first_nonzero(output_parts)
    )
    components = {component: values.get(name, 0) for name, component in FLAT_INPUT_PARTS + FLAT_OUTPUT_PARTS}
    return TokenBreakdown(
        input=values["input_tokens"] - sum(input_parts.values()),
        output=values["output_tokens"] - sum(output_parts.values()),
        **components,
    )


def _first_nonzero(parts: dict[str, int]) -> str:
    return next((name for name, value in parts.items() if value), next(iter(parts)))


def _openai(usage: dict, *, input_key: str, output_key: str) -> tuple[TokenBreakdown, dict]:
    # Chat Completions and the Responses API report the same counts under different names.
    given = _count(usage, input_key, f"usage.{input_key}", required=True)
    produced = _count(usage, output_key, f"usage.{output_key}", required=True)
    input_details = _object(usage, f"{input_key}_details", f"usage.{input_key}_details")
    output_details = _object(usage, f"{output_key}_details", f"usage.{output_key}_details")
    cached = _count(input_details, "cached_tokens", f"usage.{input_key}_details.cached_tokens")
    audio_in = _count(input_details, "audio_tokens", f"usage.{input_key}_details.audio_tokens")
    reasoning = _count(output_details, "reasoning_tokens", f"usage.{output_key}_details.reasoning_tokens")
    audio_out = _count(output_details, "audio_tokens", f"usage.{output_key}_details.audio_tokens")
    _parts_within(
        given,
        {"cached_tokens": cached, "audio_tokens": audio_in},
        total_field=input_key,
        where=f"usage.{input_key}_details",
    )
    _parts_within(
        produced,
        {"reasoning_tokens": reasoning, "audio_tokens": audio_out},
        total_field=output_key,
        where=f"usage.{output_key}_details",
    )
    breakdown = TokenBreakdown(
        input=given - cached - audio_in,
        cache_read=cached,
        audio_input=audio_in,
        output=produced - reasoning - audio_out,
        reasoning=reasoning,
        audio_output=audio_out,
    )
    return breakdown, {}


def _anthropic(usage: dict) -> tuple[TokenBreakdown, dict]:
    # Anthropic's input_tokens are the uncached ones: cache reads and writes are counted beside them.
    uncached = _count(usage, "input_tokens", "usage.input_tokens", required=True)
    produced = _count(usage, "output_tokens", "usage.output_tokens", required=True)
    read = _count(usage, "cache_read_input_tokens", "usage.cache_read_input_tokens")
    written = _count(usage, "cache_creation_input_tokens", "usage.cache_creation_input_tokens")
    split = _object(usage, "cache_creation", "usage.cache_creation")
    if split:
        written_5m = _count(split, "ephemeral_5m_input_tokens", "usage.cache_creation.ephemeral_5m_input_tokens")
        written_1h = _count(split, "ephemeral_1h_input_tokens", "usage.cache_creation.ephemeral_1h_input_tokens")
        if "cache_creation_input_tokens" in usage and written_5m + written_1h != written:
            raise UsageObjectError(
                "usage.cache_creation",
                f"ephemeral_5m_input_tokens + ephemeral_1h_input_tokens ({written_5m + written_1h}) must equal "
                f"cache_creation_input_tokens ({written}).",
            )
    else:
        written_5m, written_1h = written, 0
    tools = _object(usage, "server_tool_use", "usage.server_tool_use")
    searches = _count(tools, "web_search_requests", "usage.server_tool_use.web_search_requests")
    breakdown = TokenBreakdown(
        input=uncached, cache_read=read, cache_write_5m=written_5m, cache_write_1h=written_1h, output=produced
    )
    return breakdown, ({"web_search": searches} if searches else {})


def _modalities(details, where: str) -> dict[str, int]:
    """Gemini's [{modality, tokenCount}] lists, as {modality: count}."""
    if details is None:
        return {}
    if not isinstance(details, list):
        raise UsageObjectError(where, "Expected a list.")
    counts: dict[str, int] = {}
    for index, entry in enumerate(details):
        if not isinstance(entry, dict) or not isinstance(entry.get("modality"), str):
            raise UsageObjectError(f"{where}.{index}", "Expected {modality, tokenCount}.")
        modality = entry["modality"].upper()
        counts[modality] = counts.get(modality, 0) + _count(entry, "tokenCount", f"{where}.{index}.tokenCount")
    return counts


def _gemini(usage: dict) -> tuple[TokenBreakdown, dict]:
    # Either the response's usageMetadata object, or the response's {"usageMetadata": {...}}.
    prefix = "usage"
    if "usageMetadata" in usage:
        usage = _object(usage, "usageMetadata", "usage.usageMetadata")
        prefix = "usage.usageMetadata"
    prompt = _count(usage, "promptTokenCount", f"{prefix}.promptTokenCount", required=True)
    candidates = _count(usage, "candidatesTokenCount", f"{prefix}.candidatesTokenCount")
    cached = _count(usage, "cachedContentTokenCount", f"{prefix}.cachedContentTokenCount")
    thoughts = _count(usage, "thoughtsTokenCount", f"{prefix}.thoughtsTokenCount")
    tool_prompt = _count(usage, "toolUsePromptTokenCount", f"{prefix}.toolUsePromptTokenCount")
    prompt_modalities = _modalities(usage.get("promptTokensDetails"), f"{prefix}.promptTokensDetails")
    cache_modalities = _modalities(usage.get("cacheTokensDetails"), f"{prefix}.cacheTokensDetails")
    output_modalities = _modalities(usage.get("candidatesTokensDetails"), f"{prefix}.candidatesTokensDetails")
    # promptTokenCount includes the cached tokens; thoughts are billed as output beside the candidates.
    audio_in = max(prompt_modalities.get("AUDIO", 0) - cache_modalities.get("AUDIO", 0), 0)
    _parts_within(
        prompt,
        {"cachedContentTokenCount": cached, "uncached AUDIO tokens": audio_in},
        total_field="promptTokenCount",
        where=f"{prefix}.cachedContentTokenCount",
    )
    image_out = output_modalities.get("IMAGE", 0)
    audio_out = output_modalities.get("AUDIO", 0)
    _parts_within(
        candidates,
        {"IMAGE": image_out, "AUDIO": audio_out},
        total_field="candidatesTokenCount",
        where=f"{prefix}.candidatesTokensDetails",
    )
    breakdown = TokenBreakdown(
        input=prompt + tool_prompt - cached - audio_in,
        cache_read=cached,
        audio_input=audio_in,
        output=candidates - image_out - audio_out,
        reasoning=thoughts,
        audio_output=audio_out,
        image_output=image_out,
    )
    return breakdown, {}


READERS = {
    UsageFormat.OPENAI_CHAT: partial(_openai, input_key="prompt_tokens", output_key="completion_tokens"),
    UsageFormat.OPENAI_RESPONSES: partial(_openai, input_key="input_tokens", output_key="output_tokens"),
    UsageFormat.ANTHROPIC: _anthropic,
    UsageFormat.GEMINI: _gemini,
}


def breakdown_from_usage(usage_format: str, usage) -> tuple[TokenBreakdown, dict[str, int]]:
    """The breakdown and the per-request fee units (e.g. {"web_search": 2}) of a vendor usage object."""
    if not isinstance(usage, dict):
        raise UsageObjectError("usage", "Expected the provider's usage object.")
    return READERS[usage_format](usage)


def fee_units_parse(raw) -> dict[str, int]:
    """The `fee_units` field: {"web_search": 2, "query": 1}, counts of things priced per request."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageObjectError("fee_units", 'Expected an object of counts, e.g. {"web_search": 2}.')
    units = {}
    for name, count in raw.items():
        if not name or len(name) > FEE_NAME_LENGTH:
            raise UsageObjectError("fee_units", f"A fee name has 1 to {FEE_NAME_LENGTH} characters.")
        if problem := text_problem(name):
            raise UsageObjectError("fee_units", f"A fee name is not accepted. {problem}")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_FEE_UNITS:
            raise UsageObjectError(f"fee_units.{name}", f"Expected a whole number from 0 to {MAX_FEE_UNITS}.")
        if count:
            units[name] = count
    return units
