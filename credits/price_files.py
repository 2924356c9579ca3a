"""Reading vendor price files: the project's own format and LiteLLM's
`model_prices_and_context_window.json`. Pure: returns rows, writes nothing.

Project format: a JSON list of
    {"provider": "openai", "model_name": "gpt-4o", "input_price_per_1k": "0.005",
     "output_price_per_1k": "0.015", "cache_input_price_per_1k": null, "cache_hit_price_per_1k": null,
     "effective_from": "2026-01-01T00:00:00Z" (optional)}
LiteLLM format: an object keyed by model name with per-token prices (`input_cost_per_token`,
`output_cost_per_token`, `cache_creation_input_token_cost`, `cache_read_input_token_cost`) and
`litellm_provider`; per-token prices are converted to per-1,000.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.utils.dateparse import parse_datetime

PER_THOUSAND = Decimal(1000)

# LiteLLM provider names that map to our vendors; others (bedrock, vertex, ...) are resold and skipped.
LITELLM_PROVIDERS = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
    "vertex_ai-language-models": "google",
    "mistral": "mistral",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "azure": "azure",
    "azure_ai": "azure",
    "ollama": "ollama",
    "meta_llama": "meta",
}


class PriceFileError(ValueError):
    """The file cannot be imported; the message says where and why."""


@dataclass(frozen=True)
class PriceRow:
    provider: str
    model_name: str
    input_price_per_1k: Decimal
    output_price_per_1k: Decimal
    cache_input_price_per_1k: Decimal | None = None
    cache_hit_price_per_1k: Decimal | None = None
    effective_from: datetime | None = None


@dataclass(frozen=True)
class ParsedFile:
    format: str
    rows: list[PriceRow]
    skipped: list[str]


def _decimal(value, *, where: str) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation as error:
        raise PriceFileError(f"{where}: '{value}' is not a number") from error
    if number < 0:
        raise PriceFileError(f"{where}: a price cannot be negative")
    return number


def _per_1k(value, *, where: str) -> Decimal | None:
    number = _decimal(value, where=where)
    return None if number is None else (number * PER_THOUSAND).normalize()


def _project_rows(entries: list) -> ParsedFile:
    rows = []
    for index, entry in enumerate(entries):
        where = f"entry {index}"
        try:
            effective_from = entry.get("effective_from")
            parsed_from = parse_datetime(effective_from) if effective_from else None
            if effective_from and parsed_from is None:
                raise PriceFileError(f"{where}: effective_from '{effective_from}' is not a date-time")
            rows.append(
                PriceRow(
                    provider=entry["provider"],
                    model_name=entry["model_name"],
                    input_price_per_1k=_decimal(entry["input_price_per_1k"], where=where),
                    output_price_per_1k=_decimal(entry["output_price_per_1k"], where=where),
                    cache_input_price_per_1k=_decimal(entry.get("cache_input_price_per_1k"), where=where),
                    cache_hit_price_per_1k=_decimal(entry.get("cache_hit_price_per_1k"), where=where),
                    effective_from=parsed_from,
                )
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise PriceFileError(f"{where}: missing or malformed field {error}") from error
    return ParsedFile(format="project", rows=rows, skipped=[])


def _litellm_rows(models: dict) -> ParsedFile:
    rows, skipped = [], []
    for model_name, spec in models.items():
        if model_name == "sample_spec" or not isinstance(spec, dict):
            continue
        vendor = LITELLM_PROVIDERS.get(spec.get("litellm_provider", ""))
        if vendor is None or "input_cost_per_token" not in spec or "output_cost_per_token" not in spec:
            skipped.append(model_name)
            continue
        where = f"model '{model_name}'"
        # LiteLLM prefixes some names with their provider ("gemini/gemini-2.0-flash"); the gateway does not.
        name = model_name.split("/", 1)[1] if model_name.startswith(f"{spec['litellm_provider']}/") else model_name
        rows.append(
            PriceRow(
                provider=vendor,
                model_name=name,
                input_price_per_1k=_per_1k(spec["input_cost_per_token"], where=where),
                output_price_per_1k=_per_1k(spec["output_cost_per_token"], where=where),
                cache_input_price_per_1k=_per_1k(spec.get("cache_creation_input_token_cost"), where=where),
                cache_hit_price_per_1k=_per_1k(spec.get("cache_read_input_token_cost"), where=where),
            )
        )
    return ParsedFile(format="litellm", rows=rows, skipped=skipped)


def price_file_parse(text: str) -> ParsedFile:
    """Rows of a price file in either format (told apart by shape: a list or an object)."""
    try:
        document = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as error:
        raise PriceFileError(f"not JSON: {error}") from error
    if isinstance(document, list):
        return _project_rows(document)
    if isinstance(document, dict):
        return _litellm_rows(document)
    raise PriceFileError("expected a JSON list (project format) or object (LiteLLM format)")
