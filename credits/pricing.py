"""The arithmetic of a request's price: which vendor price and margin apply, and what it costs.

Pure: no database access. `credits.selectors.pricing_book()` builds the `PricingBook` these
functions read from the database (and caches it); tests build one by hand.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal

ZERO = Decimal("0")
PER_THOUSAND = Decimal("1000")


@dataclass(frozen=True)
class VendorPrice:
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

    def in_force_at(self, moment: datetime) -> bool:
        return self.effective_from <= moment and (self.effective_until is None or moment < self.effective_until)


@dataclass(frozen=True)
class MarginRule:
    """An approved, active margin multiplier for a scope; empty scope fields match anything."""

    id: object
    level: int
    multiplier: Decimal
    effective_from: datetime
    effective_until: datetime | None = None
    tier: str = ""
    provider: str = ""
    model_name: str = ""

    def applies_to(self, *, tier: str, provider: str, model_name: str, moment: datetime) -> bool:
        return (
            self.effective_from <= moment
            and (self.effective_until is None or moment < self.effective_until)
            and self.tier in ("", tier)
            and self.provider in ("", provider)
            and self.model_name in ("", model_name)
        )


# Margin precedence, most specific first (SPEC 2): tier+provider+model > model > provider > tier > default.
LEVEL_COMBINATION, LEVEL_MODEL, LEVEL_PROVIDER, LEVEL_TIER = 4, 3, 2, 1


@dataclass(frozen=True)
class TokenCounts:
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0


@dataclass(frozen=True)
class Quote:
    """The price of one request. Credits are rounded up: the user is never under-charged."""

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

    def price_at(self, *, provider: str, model_name: str, moment: datetime) -> VendorPrice | None:
        """The price in force when the request started (the latest start among overlapping rows)."""
        in_force = [price for price in self.prices.get((provider, model_name), ()) if price.in_force_at(moment)]
        return max(in_force, key=lambda price: price.effective_from, default=None)

    def margin_at(self, *, tier: str, provider: str, model_name: str, moment: datetime, default: Decimal) -> Decimal:
        """The most specific applicable multiplier; within one level the latest to take effect wins."""
        applicable = [
            rule
            for rule in self.margins
            if rule.applies_to(tier=tier, provider=provider, model_name=model_name, moment=moment)
        ]
        best = max(applicable, key=lambda rule: (rule.level, rule.effective_from), default=None)
        return best.multiplier if best is not None else default


def vendor_cost(price: VendorPrice, tokens: TokenCounts) -> Decimal:
    """USD the vendor charges; cache prices default to the input price when the vendor has none."""
    cache_write = price.cache_write_per_1k if price.cache_write_per_1k is not None else price.input_per_1k
    cache_read = price.cache_read_per_1k if price.cache_read_per_1k is not None else price.input_per_1k
    return (
        tokens.input_tokens * price.input_per_1k
        + tokens.output_tokens * price.output_per_1k
        + tokens.cache_write_tokens * cache_write
        + tokens.cache_read_tokens * cache_read
    ) / PER_THOUSAND


def credits_for(value_usd: Decimal, *, credit_value_usd: Decimal) -> int:
    """Whole credits covering `value_usd`, rounded up."""
    return int((value_usd / credit_value_usd).to_integral_value(rounding=ROUND_CEILING))


def quote(*, price: VendorPrice, tokens: TokenCounts, margin: Decimal, credit_value_usd: Decimal) -> Quote:
    cost = vendor_cost(price, tokens)
    value = cost * margin
    return Quote(
        vendor_cost=cost,
        margin_multiplier=margin,
        credit_value_usd=value,
        credits=credits_for(value, credit_value_usd=credit_value_usd),
        gross_margin_usd=value - cost,
        price=price,
    )


def byok_quote(price: VendorPrice | None) -> Quote:
    """Bring-your-own-key usage: the user pays the vendor directly, so it costs nothing here."""
    return Quote(
        vendor_cost=ZERO, margin_multiplier=ZERO, credit_value_usd=ZERO, credits=0, gross_margin_usd=ZERO, price=price
    )
