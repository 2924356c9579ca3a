"""Reading vendor price files: the project's own format and LiteLLM's
`model_prices_and_context_window.json`. Pure: returns rows and a result for every entry, writes nothing.

Project format: a JSON list of
    {"provider": "openai", "model_name": "gpt-4o", "input_price_per_1k": "0.005",
     "output_price_per_1k": "0.015", "cache_input_price_per_1k": null, "cache_hit_price_per_1k": null,
     "region": "" (optional), "effective_from": "2026-01-01T00:00:00Z" (optional),
     any other price column of ModelProviderPricing, and "context_tiers", "service_tiers",
     "request_fees" (optional, as that model stores them)}

LiteLLM format: an object keyed by model name, per-token prices (converted to per-1,000 tokens):

| LiteLLM key                                   | becomes                                        |
|-----------------------------------------------|------------------------------------------------|
| `input_cost_per_token`, `output_cost_per_token` | input, output                                |
| `cache_read_input_token_cost`                 | cache read                                     |
| `cache_creation_input_token_cost`             | cache write (5 minutes)                        |
| `cache_creation_input_token_cost_above_1hr`   | cache write (1 hour)                           |
| `output_cost_per_reasoning_token`             | reasoning                                      |
| `input_cost_per_audio_token`, `output_cost_per_audio_token` | audio input, audio output        |
| `output_cost_per_image_token`                 | image output                                   |
| `<any of these>_above_<N>k_tokens`            | a context tier above N x 1,000 input tokens    |
| `tiered_pricing` ranges                       | context tiers above each range's start         |
| `<any of these>_batches`, `_flex`, `_priority` | the batch, flex, priority service tier        |
| `search_context_cost_per_query` (medium size) | the `web_search` fee, USD per query            |
| `input_cost_per_query`                        | the `query` fee, USD per query                 |

Names are made the ones gateways send:
- the provider is LiteLLM's (`litellm_provider`), so azure and azure_ai stay apart; LiteLLM's own
  sub-catalogs fold into the provider a gateway names (`vertex_ai-anthropic_models` -> `vertex_ai`,
  `bedrock_converse` -> `bedrock`, `text-completion-openai` -> `openai`, `cohere_chat` -> `cohere`);
  `vendor_family` groups providers by the company that bills (azure and azure_ai: `azure`);
- the model name loses LiteLLM's routing prefix (`gemini/gemini-2.5-pro` -> `gemini-2.5-pro`);
- a regional prefix becomes the price's region: Azure's data zones and deployment types
  (`azure/eu/gpt-4o` -> `gpt-4o`, region `eu`) and Bedrock's AWS regions
  (`bedrock/us-east-1/meta.llama3-70b-instruct-v1:0` -> region `us-east-1`);
- an entry with `alias_of` takes the prices of the entry it names.
Every entry gets a result: a row (with notes naming any price key it carries that is not billed
here), or skipped with its reason.
"""

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.utils.dateparse import parse_datetime

from credits.models import PER_1K_PRICE_FIELDS

PER_THOUSAND = Decimal(1000)

# LiteLLM per-token keys -> (our column, our component).
LITELLM_COMPONENTS = {
    "input_cost_per_token": ("input_price_per_1k", "input"),
    "output_cost_per_token": ("output_price_per_1k", "output"),
    "cache_read_input_token_cost": ("cache_hit_price_per_1k", "cache_read"),
    "cache_creation_input_token_cost": ("cache_input_price_per_1k", "cache_write_5m"),
    "cache_creation_input_token_cost_above_1hr": ("cache_write_1h_price_per_1k", "cache_write_1h"),
    "output_cost_per_reasoning_token": ("reasoning_price_per_1k", "reasoning"),
    "input_cost_per_audio_token": ("audio_input_price_per_1k", "audio_input"),
    "output_cost_per_audio_token": ("audio_output_price_per_1k", "audio_output"),
    "output_cost_per_image_token": ("image_output_price_per_1k", "image_output"),
}
SERVICE_SUFFIXES = {"_batches": "batch", "_flex": "flex", "_priority": "priority"}
THRESHOLD = re.compile(r"^(?P<base>.+)_above_(?P<amount>\d+)(?P<k>k?)_tokens$")

# LiteLLM's sub-catalogs, folded into the provider name a gateway sends.
PROVIDER_FOLDS = {
    "text-completion-openai": "openai",
    "text-completion-codestral": "codestral",
    "text-completion-inception": "inception",
    "cohere_chat": "cohere",
    "bedrock_converse": "bedrock",
    "azure_text": "azure",
    "fireworks_ai-embedding-models": "fireworks_ai",
}
VERTEX_PREFIX = "vertex_ai-"
# The company that bills, for reports; a provider not named here is its own family.
VENDOR_FAMILIES = {
    "openai": "openai",
    "chatgpt": "openai",
    "azure": "azure",
    "azure_ai": "azure",
    "anthropic": "anthropic",
    "gemini": "google",
    "vertex_ai": "google",
    "bedrock": "aws",
    "bedrock_mantle": "aws",
    "sagemaker": "aws",
    "amazon_nova": "aws",
    "mistral": "mistral",
    "codestral": "mistral",
    "cohere": "cohere",
    "meta_llama": "meta",
    "ollama": "ollama",
}
AZURE_ZONES = {"eu", "us", "global", "us-gov", "apac", "global-standard", "standard"}
AWS_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d+$")
NO_OUTPUT_MODES = {"embedding", "rerank", "moderation"}
FEE_KEYS = {"search_context_cost_per_query", "input_cost_per_query"}
IGNORED_KEYS = {"litellm_provider", "mode", "alias_of", "tiered_pricing"}


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
    cache_write_1h_price_per_1k: Decimal | None = None
    reasoning_price_per_1k: Decimal | None = None
    audio_input_price_per_1k: Decimal | None = None
    audio_output_price_per_1k: Decimal | None = None
    image_output_price_per_1k: Decimal | None = None
    context_tiers: list = field(default_factory=list)
    service_tiers: dict = field(default_factory=dict)
    request_fees: dict = field(default_factory=dict)
    region: str = ""
    effective_from: datetime | None = None
    vendor_family: str = ""
    source: str = ""  # the entry it came from: LiteLLM's key, or "entry N"
    notes: tuple[str, ...] = ()

    @property
    def prices(self) -> dict:
        """The keyword arguments of credits.services.model_price_create for this row's prices."""
        columns = {name: getattr(self, name) for name in PER_1K_PRICE_FIELDS}
        return columns | {
            "context_tiers": self.context_tiers,
            "service_tiers": self.service_tiers,
            "request_fees": self.request_fees,
        }


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


@dataclass(frozen=True)
class ParsedFile:
    format: str
    rows: list[PriceRow]
    skipped: list[Skipped]


def _decimal(value, *, where: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PriceFileError(f"{where}: '{value}' is not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation as error:
        raise PriceFileError(f"{where}: '{value}' is not a number") from error
    if not number.is_finite() or number < 0:
        raise PriceFileError(f"{where}: a price cannot be negative")
    return number


def _per_1k(value, *, where: str) -> Decimal | None:
    number = _decimal(value, where=where)
    return None if number is None else number * PER_THOUSAND


def _project_rows(entries: list) -> ParsedFile:
    rows = []
    for index, entry in enumerate(entries):
        where = f"entry {index}"
        try:
            effective_from = entry.get("effective_from")
            parsed_from = parse_datetime(effective_from) if effective_from else None
            if effective_from and parsed_from is None:
                raise PriceFileError(f"{where}: effective_from '{effective_from}' is not a date-time")
            prices = {name: _decimal(entry.get(name), where=f"{where} {name}") for name in PER_1K_PRICE_FIELDS}
            for required in ("input_price_per_1k", "output_price_per_1k"):
                if prices[required] is None:
                    raise KeyError(required)
            rows.append(
                PriceRow(
                    provider=entry["provider"],
                    model_name=entry["model_name"],
                    region=entry.get("region") or "",
                    context_tiers=entry.get("context_tiers") or [],
                    service_tiers=entry.get("service_tiers") or {},
                    request_fees=entry.get("request_fees") or {},
                    effective_from=parsed_from,
                    source=f"{where} ({entry['provider']}/{entry['model_name']})",
                    **prices,
                )
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise PriceFileError(f"{where}: missing or malformed field {error}") from error
    return ParsedFile(format="project", rows=rows, skipped=[])


# LiteLLM


def provider_of(litellm_provider: str) -> str:
    if litellm_provider.startswith(VERTEX_PREFIX):
        return "vertex_ai"
    return PROVIDER_FOLDS.get(litellm_provider, litellm_provider)


def _name_and_region(key: str, litellm_provider: str, provider: str) -> tuple[str, str]:
    parts = key.split("/")
    if len(parts) > 1 and parts[0] in (litellm_provider, provider):
        parts = parts[1:]
    region = ""
    if len(parts) > 1:
        family = VENDOR_FAMILIES.get(provider, provider)
        if (family == "azure" and parts[0] in AZURE_ZONES) or (family == "aws" and AWS_REGION.match(parts[0])):
            region, parts = parts[0], parts[1:]
    return "/".join(parts), region


def _split_key(key: str) -> tuple[str, str, int | None] | None:
    """(base key, service tier, context threshold) of a per-token price key, or None."""
    tier = "standard"
    for suffix, name in SERVICE_SUFFIXES.items():
        if key.endswith(suffix):
            key, tier = key[: -len(suffix)], name
            break
    threshold = None
    match = THRESHOLD.match(key)
    if match:
        key = match["base"]
        threshold = int(match["amount"]) * (1000 if match["k"] else 1)
    if key not in LITELLM_COMPONENTS:
        return None
    return key, tier, threshold


def _tiered_pricing(spec: dict, where: str) -> tuple[dict, list, list[str]]:
    """LiteLLM's `tiered_pricing` ranges: the range from 0 sets base prices; each later range is a
    context tier above its start."""
    base, tiers, notes = {}, [], []
    for index, tier in enumerate(spec.get("tiered_pricing") or []):
        start = int(Decimal(str(tier.get("range", [0])[0])))
        prices = {}
        for key, value in tier.items():
            if key in LITELLM_COMPONENTS:
                prices[LITELLM_COMPONENTS[key][1]] = _per_1k(value, where=f"{where} tiered_pricing.{index}.{key}")
            elif key != "range":
                notes.append(f"tiered_pricing.{key}")
        if start == 0:
            base.update(prices)
        else:
            tiers.append({"above_tokens": start, "prices": prices})
    return base, tiers, notes


def _unbilled(price_key: str) -> bool:
    """A key about money that this import does not turn into a price (listed in the entry's notes)."""
    if price_key in IGNORED_KEYS | FEE_KEYS:
        return False
    return any(word in price_key for word in ("cost", "pricing", "uplift"))


def _service_tiers(service: dict) -> dict:
    return {
        tier: {
            "prices": spec["prices"],
            "context_tiers": [
                {"above_tokens": above, "prices": prices} for above, prices in sorted(spec["context_tiers"].items())
            ],
        }
        for tier, spec in service.items()
    }


def _litellm_entry(key: str, spec: dict, document: dict) -> PriceRow | Skipped:
    where = f"model '{key}'"
    if "alias_of" in spec:
        target = document.get(spec["alias_of"])
        if not isinstance(target, dict):
            return Skipped(key, f"alias of '{spec['alias_of']}', which the file does not have")
        spec = {**target, "litellm_provider": spec.get("litellm_provider") or target.get("litellm_provider")}
    litellm_provider = spec.get("litellm_provider")
    if not isinstance(litellm_provider, str) or not re.fullmatch(r"[a-z0-9_.-]+", litellm_provider):
        return Skipped(key, "no litellm_provider")
    provider = provider_of(litellm_provider)
    mode = spec.get("mode")
    base: dict[str, Decimal] = {}
    columns: dict[str, Decimal] = {}
    context: dict[int, dict] = {}
    service: dict[str, dict] = {}
    notes: list[str] = []
    for price_key, value in spec.items():
        split = _split_key(price_key)
        if split is None:
            if _unbilled(price_key):
                notes.append(price_key)
            continue
        if not isinstance(value, int | float | Decimal) or isinstance(value, bool):
            return Skipped(key, f"{price_key} is not a number")
        component_key, tier, threshold = split
        column, component = LITELLM_COMPONENTS[component_key]
        per_1k = _per_1k(value, where=f"{where} {price_key}")
        if tier == "standard" and threshold is None:
            base[component], columns[column] = per_1k, per_1k
        elif tier == "standard":
            context.setdefault(threshold, {})[component] = per_1k
        else:
            entry = service.setdefault(tier, {"prices": {}, "context_tiers": {}})
            if threshold is None:
                entry["prices"][component] = per_1k
            else:
                entry["context_tiers"].setdefault(threshold, {})[component] = per_1k
    tiered_base, tiered, tiered_notes = _tiered_pricing(spec, where)
    notes += tiered_notes
    for component, price in tiered_base.items():
        if component not in base:
            base[component] = price
            columns[next(c for c, name in LITELLM_COMPONENTS.values() if name == component)] = price
    if "input" not in base:
        priced_by = sorted(name for name in spec if "cost" in name or name == "tiered_pricing")
        return Skipped(key, f"no per-token input price (priced by: {', '.join(priced_by) or 'nothing'})")
    if "output" not in base:
        if mode not in NO_OUTPUT_MODES:
            return Skipped(key, "no output_cost_per_token")
        columns["output_price_per_1k"] = Decimal(0)
        notes.append(f"no output price: a {mode} model produces no output tokens")
    fees = {}
    search = spec.get("search_context_cost_per_query")
    if isinstance(search, dict) and search.get("search_context_size_medium") is not None:
        fees["web_search"] = _decimal(search["search_context_size_medium"], where=f"{where} web search")
        if len({str(value) for value in search.values()}) > 1:
            notes.append("search_context_cost_per_query: the medium size is charged for every query")
    if spec.get("input_cost_per_query") is not None:
        fees["query"] = _decimal(spec["input_cost_per_query"], where=f"{where} input_cost_per_query")
    model_name, region = _name_and_region(key, litellm_provider, provider)
    return PriceRow(
        provider=provider,
        model_name=model_name,
        region=region,
        vendor_family=VENDOR_FAMILIES.get(provider, provider),
        context_tiers=[
            {"above_tokens": above, "prices": prices}
            for above, prices in sorted({**dict((t["above_tokens"], t["prices"]) for t in tiered), **context}.items())
        ],
        service_tiers=_service_tiers(service),
        request_fees=fees,
        source=key,
        notes=tuple(notes),
        **columns,
    )


def _prefixed(row: PriceRow) -> bool:
    return row.source.startswith(f"{row.provider}/")


def _resolve_same_name(rows: list[PriceRow], skipped: list[Skipped]) -> PriceRow | None:
    """The row to import among entries that name the same model: the first if their prices agree;
    else the one keyed with its provider's prefix, as LiteLLM's own lookup prefers it; else none."""
    first = rows[0]
    if all(row.prices == first.prices for row in rows):
        skipped += [Skipped(row.source, f"the same model and prices as '{first.source}'") for row in rows[1:]]
        return first
    prefixed = [row for row in rows if _prefixed(row)]
    if len(prefixed) == 1:
        winner = prefixed[0]
        skipped += [
            Skipped(row.source, f"the same model as '{winner.source}', whose prices apply (LiteLLM looks it up first)")
            for row in rows
            if row is not winner
        ]
        return winner
    where = f"{first.provider}/{first.model_name}" + (f" in {first.region}" if first.region else "")
    for row in rows:
        others = ", ".join(f"'{other.source}'" for other in rows if other is not row)
        skipped.append(Skipped(row.source, f"{where} has other prices in {others}: neither is imported"))
    return None


def _litellm_rows(document: dict) -> ParsedFile:
    by_name: dict[tuple[str, str, str], list[PriceRow]] = {}
    skipped: list[Skipped] = []
    for key, spec in document.items():
        if key == "sample_spec":
            skipped.append(Skipped(key, "the file's documentation of its own format"))
            continue
        if not isinstance(spec, dict):
            skipped.append(Skipped(key, "not an object"))
            continue
        result = _litellm_entry(key, spec, document)
        if isinstance(result, Skipped):
            skipped.append(result)
        else:
            by_name.setdefault((result.provider, result.model_name, result.region), []).append(result)
    rows = [row for same in by_name.values() if (row := _resolve_same_name(same, skipped)) is not None]
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
