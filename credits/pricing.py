"""The arithmetic of a request's price: which vendor price and margin apply, and what it costs.

Pure: no database access. `credits.selectors.pricing_book()` builds the `PricingBook` these
functions read from the database (and caches it); tests build one by hand.

A vendor price has a per-token price for each canonical component of `credits.usage_objects`
(USD per 1,000 tokens), and may have:
- context-length tiers: when a request's input (every input token, cached or not) is above a tier's
  threshold, the whole request takes that tier's prices (the highest threshold crossed wins);
- service-tier prices (`batch`, `flex`, `priority`; `standard` is the base), each with its own
  context tiers;
- per-request fees, USD per unit (e.g. per web-search query).

A component without a price of its own takes its parent's: cache reads and writes, audio input ->
input; 1-hour cache writes -> 5-minute cache writes; reasoning, audio and image output -> output. For
a service tier and a context tier, the price named for both wins; else, when the service tier and the
context tier each name one, the higher (never under-charge); else whichever is named; else the base
price. A service tier the model has no prices for is charged at the standard prices.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import product
from typing import NamedTuple

from billing_project.enums import SubscriptionTier
from billing_project.money import EXACT, credits_for_usd
from credits.models import ServiceTier
from credits.usage_objects import COMPONENTS, TokenBreakdown

ZERO = Decimal("0")

# Where a component without a price of its own takes its price from.
PARENT = {
    "cache_read": "input",
    "cache_write_5m": "input",
    "cache_write_1h": "cache_write_5m",
    "audio_input": "input",
    "reasoning": "output",
    "audio_output": "output",
    "image_output": "output",
}


class UnpricedFee(LookupError):
    """A request counts units of a fee the model has no price for."""

    def __init__(self, fee: str):
        super().__init__(fee)
        self.fee = fee


@dataclass(frozen=True)
class ContextTier:
    """Prices (USD per 1,000 tokens, by component) for requests whose input is above `above_tokens`."""

    above_tokens: int
    prices: dict[str, Decimal]


@dataclass(frozen=True)
class ServicePrices:
    """A service tier's own prices and context tiers."""

    prices: dict[str, Decimal] = field(default_factory=dict)
    context_tiers: tuple[ContextTier, ...] = ()


class InForce:
    """A row in force over [effective_from, effective_until) (no end: for good)."""

    effective_from: datetime
    effective_until: datetime | None

    def in_force_at(self, moment: datetime) -> bool:
        return self.effective_from <= moment and (self.effective_until is None or moment < self.effective_until)


@dataclass(frozen=True)
class VendorPrice(InForce):
    """USD per 1,000 tokens of one model, in force over [effective_from, effective_until)."""

    id: object
    provider: str
    model_name: str
    input_per_1k: Decimal
    output_per_1k: Decimal
    cache_write_per_1k: Decimal | None
    cache_read_per_1k: Decimal | None
    effective_from: datetime
    effective_until: datetime | None = None
    cache_write_1h_per_1k: Decimal | None = None
    reasoning_per_1k: Decimal | None = None
    audio_input_per_1k: Decimal | None = None
    audio_output_per_1k: Decimal | None = None
    image_output_per_1k: Decimal | None = None
    region: str = ""
    context_tiers: tuple[ContextTier, ...] = ()
    service_tiers: dict[str, ServicePrices] = field(default_factory=dict)
    fees: dict[str, Decimal] = field(default_factory=dict)
    # Resolved rates by (service tier, context tier threshold): computed once per process.
    _rates: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def base_prices(self) -> dict[str, Decimal]:
        """The components with a base price of their own."""
        named = {
            "input": self.input_per_1k,
            "output": self.output_per_1k,
            "cache_write_5m": self.cache_write_per_1k,
            "cache_read": self.cache_read_per_1k,
            "cache_write_1h": self.cache_write_1h_per_1k,
            "reasoning": self.reasoning_per_1k,
            "audio_input": self.audio_input_per_1k,
            "audio_output": self.audio_output_per_1k,
            "image_output": self.image_output_per_1k,
        }
        return {component: value for component, value in named.items() if value is not None}

    def rates(self, *, service_tier: str, input_tokens: int) -> dict[str, Decimal]:
        """USD per 1,000 tokens of every component for a request of this service tier and input size."""
        return self._scaled_rates(service_tier, input_tokens)[0]

    def _scaled_rates(self, service_tier: str, input_tokens: int) -> tuple[dict[str, Decimal], int, tuple]:
        """The rates, and the same rates as whole multiples of 10^-scale (exact integer arithmetic on
        the hot path), computed once per process for each tier combination."""
        service = self.service_tiers.get(service_tier) if service_tier != ServiceTier.STANDARD else None
        crossed = _crossed(self.context_tiers, input_tokens)
        service_crossed = _crossed(service.context_tiers, input_tokens) if service else None
        key = (
            service_tier if service else ServiceTier.STANDARD,
            crossed.above_tokens if crossed else None,
            service_crossed.above_tokens if service_crossed else None,
        )
        scaled = self._rates.get(key)
        if scaled is None:
            rates = _resolve(
                base=self.base_prices,
                context=crossed.prices if crossed else {},
                service=service.prices if service else {},
                both=service_crossed.prices if service_crossed else {},
            )
            scale = max(0, *(-rate.as_tuple().exponent for rate in rates.values()))
            units = tuple(int(rates[component].scaleb(scale, context=EXACT)) for component in COMPONENTS)
            scaled = self._rates[key] = (rates, scale, units)
        return scaled


def _crossed(tiers: tuple[ContextTier, ...], input_tokens: int) -> ContextTier | None:
    """The tier with the highest threshold below the request's input, if any."""
    crossed = [tier for tier in tiers if input_tokens > tier.above_tokens]
    return max(crossed, key=lambda tier: tier.above_tokens, default=None)


def _resolve(*, base: dict, context: dict, service: dict, both: dict) -> dict[str, Decimal]:
    explicit: dict[str, Decimal] = {}
    for component in COMPONENTS:
        if component in both:
            explicit[component] = both[component]
        elif component in context and component in service:
            explicit[component] = max(context[component], service[component])
        elif component in context or component in service:
            explicit[component] = context.get(component, service.get(component))
        elif component in base:
            explicit[component] = base[component]
    resolved: dict[str, Decimal] = {}
    for component in COMPONENTS:  # parents come before their children in COMPONENTS' order
        resolved[component] = explicit.get(component, resolved.get(PARENT.get(component, ""), ZERO))
    return resolved


@dataclass(frozen=True)
class MarginRule(InForce):
    """An approved, active margin multiplier for a scope; empty scope fields match anything."""

    id: object
    level: int
    multiplier: Decimal
    effective_from: datetime
    effective_until: datetime | None = None
    tier: str = ""
    provider: str = ""
    model_name: str = ""

    @property
    def scope(self) -> tuple[str, str, str]:
        return self.tier, self.provider, self.model_name


def pricing_tier(*, tier: str, licensed_without_byok: bool) -> str:
    """The tier a request is priced at. `tier` is the user's as subscriptions last set it (credits
    keeps it on the balance row): a paid one wins, since what the user pays for now sets the margin
    even when they also hold a license; else `perpetual` for a holder of an active license without
    BYOK (with BYOK on, usage costs nothing anyway); else free."""
    if tier != SubscriptionTier.FREE:
        return tier
    return SubscriptionTier.PERPETUAL if licensed_without_byok else SubscriptionTier.FREE


# Margin precedence, most specific first (SPEC 2): tier+provider+model > model > provider > tier > default.
LEVEL_COMBINATION, LEVEL_MODEL, LEVEL_PROVIDER, LEVEL_TIER = 4, 3, 2, 1


class Quote(NamedTuple):
    """The price of one request. Credits are rounded up: the user is never under-charged. A named
    tuple: made once per usage event, in a third of a frozen dataclass's time."""

    vendor_cost: Decimal
    margin_multiplier: Decimal
    credit_value_usd: Decimal
    credits: int
    gross_margin_usd: Decimal
    price: VendorPrice | None


@dataclass
class PricingBook:
    """Every vendor price (with its history) and every margin rule in force or scheduled."""

    prices: dict[tuple[str, str], list[VendorPrice]] = field(default_factory=dict)
    margins: list[MarginRule] = field(default_factory=list)
    providers: dict[str, object] = field(default_factory=dict)  # enabled provider name -> id
    # The rules by scope, and the `margins` list they were made from (`_margins_by_scope`).
    _margin_index: tuple[list | None, dict] = field(
        default_factory=lambda: (None, {}), init=False, repr=False, compare=False
    )

    def price_at(self, *, provider: str, model_name: str, moment: datetime, region: str = "") -> VendorPrice | None:
        """The price in force when the request started: the request's region's own price if the model
        has one, else the price for any region; among overlapping rows, the latest start."""
        in_force = [
            price
            for price in self.prices.get((provider, model_name), ())
            if price.region in ("", region) and price.in_force_at(moment)
        ]
        return max(in_force, key=lambda price: (price.region != "", price.effective_from), default=None)

    def margin_at(self, *, tier: str, provider: str, model_name: str, moment: datetime, default: Decimal) -> Decimal:
        """The most specific applicable multiplier; within one level the latest to take effect wins.
        A rule applies where each of its scope's fields is empty or the request's: only the rules of
        those eight scopes are looked at, however many models have a margin of their own (looking at
        every rule cost a usage event 135 us with 500 model margins)."""
        by_scope = self._margins_by_scope()
        applicable = [
            rule
            for scope in product((tier, ""), (provider, ""), (model_name, ""))
            for rule in by_scope.get(scope, ())
            if rule.in_force_at(moment)
        ]
        best = max(applicable, key=lambda rule: (rule.level, rule.effective_from), default=None)
        return best.multiplier if best is not None else default

    def _margins_by_scope(self) -> dict[tuple[str, str, str], list[MarginRule]]:
        """The margin rules by scope, made again when `margins` has been given another list."""
        made_from, by_scope = self._margin_index
        if made_from is not self.margins:
            by_scope = {}
            for rule in self.margins:
                by_scope.setdefault(rule.scope, []).append(rule)
            self._margin_index = (self.margins, by_scope)
        return by_scope


def vendor_cost(
    price: VendorPrice,
    tokens: TokenBreakdown,
    *,
    service_tier: str = ServiceTier.STANDARD,
    fee_units: Mapping[str, int] | None = None,
) -> Decimal:
    """USD the vendor charges, exactly: every component at its rate, plus the per-request fees."""
    _, scale, units = price._scaled_rates(service_tier, tokens.input_total)
    total = sum(count * unit for count, unit in zip(tokens.counts(), units, strict=True))
    cost = Decimal(f"{total}E-{scale + 3}")  # exact: whole multiples of 10^-scale per 1,000 tokens
    for fee, count in (fee_units or {}).items():
        if fee not in price.fees:
            raise UnpricedFee(fee)
        cost = EXACT.add(cost, EXACT.multiply(count, price.fees[fee]))
    return cost


def quote(
    *,
    price: VendorPrice,
    tokens: TokenBreakdown,
    margin: Decimal,
    credit_value_usd: Decimal,
    service_tier: str = ServiceTier.STANDARD,
    fee_units: Mapping[str, int] | None = None,
) -> Quote:
    cost = vendor_cost(price, tokens, service_tier=service_tier, fee_units=fee_units)
    value = EXACT.multiply(cost, margin)
    gross_margin = EXACT.subtract(value, cost)
    return Quote(
        vendor_cost=cost,
        margin_multiplier=margin,
        credit_value_usd=value,
        credits=credits_for_usd(value, credit_value_usd=credit_value_usd),
        gross_margin_usd=gross_margin,
        price=price,
    )


def byok_quote(price: VendorPrice | None) -> Quote:
    """Bring-your-own-key usage: the user pays the vendor directly, so it costs nothing here."""
    return Quote(
        vendor_cost=ZERO, margin_multiplier=ZERO, credit_value_usd=ZERO, credits=0, gross_margin_usd=ZERO, price=price
    )
