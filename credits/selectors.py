"""Reads of credits: the pricing book, balances, grants, holds and usage."""

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TypeVar
from uuid import uuid4

from django.conf import settings
from django.core.cache import cache, caches
from django.db import transaction
from django.db.models import Case, Count, F, Q, Sum, Value, When
from django.db.models.functions import TruncDate
from django.utils import timezone

from audit.services import resource_type_of
from billing_project.cache_writes import cache_set_on_commit
from billing_project.money import usd_round
from credits import ledger_sql, pricing
from credits.budgets import Budget, month_key, next_month_start
from credits.models import (
    PER_1K_PRICE_FIELDS,
    ApprovalStatus,
    CreditDeductionLedger,
    CreditPack,
    ModelProviderPricing,
    PricingConfig,
    PricingScope,
    Provider,
    TokenUsageLedger,
    UserCreditBalance,
)
from credits.usage_objects import FLAT_FIELDS, TokenBreakdown, breakdown_from_flat
from payments.models import OperationEffect, OperationKind, PaymentOperation

PRICING_VERSION_KEY = "credits:pricing-book-version"
PRICING_VERSION_SECONDS = 300
SCOPE_LEVELS = {
    PricingScope.COMBINATION: pricing.LEVEL_COMBINATION,
    PricingScope.MODEL: pricing.LEVEL_MODEL,
    PricingScope.PROVIDER: pricing.LEVEL_PROVIDER,
    PricingScope.TIER: pricing.LEVEL_TIER,
}

# This process's copy of the pricing book and the version it was built from.
_book_cache: tuple[str, pricing.PricingBook] | None = None


def _decimals(prices: dict) -> dict[str, Decimal]:
    return {name: Decimal(value) for name, value in prices.items()}


def _context_tiers(tiers: list) -> tuple[pricing.ContextTier, ...]:
    return tuple(
        pricing.ContextTier(above_tokens=int(tier["above_tokens"]), prices=_decimals(tier["prices"])) for tier in tiers
    )


BOOK_COLUMNS = (
    "id",
    "provider__name",
    "model_name",
    "region",
    *PER_1K_PRICE_FIELDS,
    "context_tiers",
    "service_tiers",
    "request_fees",
    "effective_from",
    "effective_until",
)


def _vendor_price_of(row: dict) -> pricing.VendorPrice:
    """The pricing arithmetic's view of a stored price (its JSON prices are decimal strings)."""
    return pricing.VendorPrice(
        id=row["id"],
        provider=row["provider__name"],
        model_name=row["model_name"],
        region=row["region"],
        input_per_1k=row["input_price_per_1k"],
        output_per_1k=row["output_price_per_1k"],
        cache_write_per_1k=row["cache_input_price_per_1k"],
        cache_read_per_1k=row["cache_hit_price_per_1k"],
        cache_write_1h_per_1k=row["cache_write_1h_price_per_1k"],
        reasoning_per_1k=row["reasoning_price_per_1k"],
        audio_input_per_1k=row["audio_input_price_per_1k"],
        audio_output_per_1k=row["audio_output_price_per_1k"],
        image_output_per_1k=row["image_output_price_per_1k"],
        context_tiers=_context_tiers(row["context_tiers"]),
        service_tiers={
            tier: pricing.ServicePrices(
                prices=_decimals(spec.get("prices", {})), context_tiers=_context_tiers(spec.get("context_tiers", []))
            )
            for tier, spec in row["service_tiers"].items()
        },
        fees=_decimals(row["request_fees"]),
        effective_from=row["effective_from"],
        effective_until=row["effective_until"],
    )


def _pricing_book_load() -> pricing.PricingBook:
    book = pricing.PricingBook(providers=dict(Provider.objects.filter(is_enabled=True).values_list("name", "pk")))
    # Plain rows, not model instances: the book holds every price of every model (thousands after an
    # import of LiteLLM's map) and is rebuilt in each process after any change.
    for row in ModelProviderPricing.objects.filter(is_active=True).values(*BOOK_COLUMNS):
        book.prices.setdefault((row["provider__name"], row["model_name"]), []).append(_vendor_price_of(row))
    approved = PricingConfig.objects.filter(is_active=True, approval_status=ApprovalStatus.APPROVED)
    book.margins = [margin_rule_of(config) for config in approved.select_related("provider")]
    return book


def margin_rule_of(config: PricingConfig) -> pricing.MarginRule:
    return pricing.MarginRule(
        id=config.pk,
        level=SCOPE_LEVELS[config.scope_type],
        multiplier=config.margin_multiplier,
        effective_from=config.effective_from,
        effective_until=config.effective_until,
        tier=config.subscription_tier,
        provider=config.provider.name if config.provider_id else "",
        model_name=config.model_name,
    )


def model_price_history(*, provider, model_name: str, region: str = ""):
    """The prices in force, or once in force, of one model in one region, oldest first."""
    return ModelProviderPricing.objects.filter(
        provider=provider, model_name=model_name, region=region, is_active=True
    ).order_by("effective_from")


def pricing_book() -> pricing.PricingBook:
    """Every price and approved margin, loaded once per process and reloaded when the shared
    version in the cache changes (any change to a provider, price or margin bumps it; other workers
    see the bump within PROCESS_CACHE_SECONDS). The version lives PRICING_VERSION_SECONDS, so a bump
    lost to a cache outage is made up within that time."""
    global _book_cache
    version = caches["process"].get(PRICING_VERSION_KEY) or cache.get(PRICING_VERSION_KEY)
    if version is None:
        # First reader after a flush (or the cache is down: then every call reloads, still correct).
        cache.add(PRICING_VERSION_KEY, uuid4().hex, timeout=PRICING_VERSION_SECONDS)
        version = cache.get(PRICING_VERSION_KEY)
    if version is not None:
        caches["process"].set(PRICING_VERSION_KEY, version)
    cached = _book_cache
    if version is not None and cached is not None and cached[0] == version:
        return cached[1]
    book = _pricing_book_load()
    if version is not None:
        _book_cache = (version, book)
    return book


def pricing_book_invalidate() -> None:
    """Makes every process reload the book, once the change that called this has committed."""

    def bumped():
        cache.set(PRICING_VERSION_KEY, uuid4().hex, timeout=PRICING_VERSION_SECONDS)
        caches["process"].delete(PRICING_VERSION_KEY)

    transaction.on_commit(bumped)


def day_bounds(date_from: date, date_to: date) -> tuple[datetime, datetime]:
    """[start of date_from, start of the day after date_to) in UTC: a range the time indexes serve."""
    return (
        datetime.combine(date_from, time.min, tzinfo=UTC),
        datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=UTC),
    )


def spendable(balance: int, remaining: Iterable[int]) -> int:
    """Credits that may be spent (holds aside): what the unexpired grants have left. The stored
    balance agrees unless the ledger is damaged; then the smaller figure is the safe one and
    `verify_ledger` reports the damage."""
    return min(balance, sum(remaining))


def _budget_of(columns: dict | None, now) -> Budget:
    """The budget of a balance row's BUDGET_COLUMNS (no row: no budget, nothing spent)."""
    if columns is None:
        return Budget(monthly_credits=None, hard_limit=False, spent_this_month=0, notified_percent=0)
    return Budget.of(
        monthly_credits=columns["budget_monthly_credits"],
        hard_limit=columns["budget_hard_limit"],
        month=columns["budget_month"],
        spent=columns["budget_spent"],
        notified_percent=columns["budget_notified_percent"],
        this_month=month_key(now),
    )


def credits_available(*, user_id: int) -> dict:
    """What a user may spend now: unexpired grants minus live holds (read without locking), by the
    same statements the recording path uses under its lock; and what a hard budget still allows
    (`budget_available`, None without one)."""
    now = timezone.now()
    stored, grants, budget_columns = ledger_sql.balance_and_live_grants(user_id, now)
    balance = spendable(stored, (grant["remaining"] for grant in grants))
    held = ledger_sql.holds_live_amount(user_id, now)
    return {
        "balance": balance,
        "held": held,
        "available": max(balance - held, 0),
        "budget_available": _budget_of(budget_columns, now).available(held=held),
    }


def budget_get(*, user_id) -> Budget:
    """A user's monthly budget and this month's spend (read without locking)."""
    columns = UserCreditBalance.objects.filter(user_id=user_id).values(*ledger_sql.BUDGET_COLUMNS).first()
    return _budget_of(columns, timezone.now())


# `me/credits/` is the most frequent read of the API, so it is served from a per-user cache entry.
# Every balance change gives the user a new cache generation when it commits, and an entry is used only
# while its generation is the current one: a reader that read the database before a change and stored
# its result after it cannot serve that result. The entry's expiry is a safety net (a generation write
# lost to a cache outage) and never outlives the first grant expiry it contains.
BALANCE_CACHE_SECONDS = 60
BALANCE_GENERATION_SECONDS = 24 * 3600


Shown = TypeVar("Shown")


def _balance_cache_keys(user_id) -> tuple[str, str]:
    # The entry's name says what it holds (the API's JSON body): an entry written by a release whose
    # `present` made something else is never read as this one's.
    return f"credits:balance-json:{user_id}", f"credits:balance-generation:{user_id}"


def balance_get(*, user, present: Callable[[dict], Shown]) -> Shown:
    """A user's spendable balance and the unexpired grants that make it up, in spending order, as
    `present` shows them (the API's JSON body). The cache keeps what `present` returned, so a hit
    serves it without presenting it again."""
    entry_key, generation_key = _balance_cache_keys(user.pk)
    cached = cache.get_many([entry_key, generation_key])
    generation, entry = cached.get(generation_key), cached.get(entry_key)
    if entry is not None and entry[0] == generation:
        return entry[1]
    now = timezone.now()
    stored, grants, budget_columns = ledger_sql.balance_and_live_grants(user.pk, now)
    budget = _budget_of(budget_columns, now)
    # A grant past its expiry is not spendable even before the expiry job writes its ledger row, so
    # it is not shown either.
    body = {
        "balance": spendable(stored, (grant["remaining"] for grant in grants)),
        "grants": grants,
        "budget": budget.as_dict() if budget.monthly_credits is not None else None,
    }
    # Nor does an entry outlive the month whose spend it shows.
    expiries = [(grant["expires_at"] - now).total_seconds() for grant in grants if grant["expires_at"]]
    expiries.append((next_month_start(now) - now).total_seconds())
    shown = present(body)
    cache.set(entry_key, (generation, shown), timeout=int(min([BALANCE_CACHE_SECONDS, *expiries])))
    return shown


def balances_invalidate(*, user_ids: list) -> None:
    """Makes readers drop the users' cached balances, once the change that called this has committed
    (one cache round trip for all of them)."""
    # One new generation serves every user of the change: it differs from each one's previous.
    generation = uuid4().hex
    generations = {_balance_cache_keys(user_id)[1]: generation for user_id in user_ids}
    cache_set_on_commit(generations, timeout=BALANCE_GENERATION_SECONDS)


# Every input token, in the flat fields' one meaning: rows recorded before it (empty usage_format)
# stored the cache tokens beside input_tokens, not in it. Totals of input tokens sum this.
INPUT_TOKENS_TOTAL = F("input_tokens") + Case(
    When(usage_format="", then=F("cached_input_tokens") + F("cache_write_tokens")), default=Value(0)
)


def usage_breakdown(usage: TokenUsageLedger) -> TokenBreakdown:
    """The canonical breakdown of a recorded request (see INPUT_TOKENS_TOTAL for older rows)."""
    values = {name: getattr(usage, name) for name in FLAT_FIELDS}
    if not usage.usage_format:
        values["input_tokens"] += usage.cached_input_tokens + usage.cache_write_tokens
    return breakdown_from_flat(values)


def usage_list_for_user(*, user, date_from=None, date_to=None, model=None, provider=None):
    """A user's usage, newest first, with the grants that paid for each request."""
    rows = TokenUsageLedger.objects.filter(user=user).select_related("provider", "deduction")
    if date_from:
        rows = rows.filter(created_at__gte=day_bounds(date_from, date_from)[0])
    if date_to:
        rows = rows.filter(created_at__lt=day_bounds(date_to, date_to)[1])
    if model:
        rows = rows.filter(model_name=model)
    if provider:
        rows = rows.filter(provider__name=provider)
    return rows.prefetch_related("deduction__consumptions__source")


def deductions_for_staff():
    """Every deduction and reversal, newest first, with the usage row (request, provider, model) of
    those that paid for an LLM request."""
    return CreditDeductionLedger.objects.select_related("user", "usage__provider").order_by("-created_at", "-id")


def usage_daily_for_user(*, user, date_from, date_to):
    """Per-day totals of a user's usage, computed from the ledger (today included)."""
    start, end = day_bounds(date_from, date_to)
    return (
        TokenUsageLedger.objects.filter(user=user, created_at__gte=start, created_at__lt=end)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(
            requests=Count("id"),
            input_tokens=Sum(INPUT_TOKENS_TOTAL),
            output_tokens=Sum("output_tokens"),
            credits=Sum("credits_deducted"),
        )
        .order_by("day")
    )


def pricing_config_simulate(*, config: PricingConfig, days: int = 30) -> dict:
    """What a pending margin would have changed over the last `days` of (non-BYOK) usage: every
    request re-priced with the margin that would win with and without it, at today's rules."""
    now = timezone.now()
    book = pricing_book()
    with_candidate = pricing.PricingBook(
        prices=book.prices, providers=book.providers, margins=[*book.margins, margin_rule_of(config)]
    )
    moment = max(now, config.effective_from)
    groups = (
        TokenUsageLedger.objects.filter(created_at__gte=now - timedelta(days=days), is_byok=False)
        .values("user_tier_at_request", "provider__name", "model_name")
        .annotate(requests=Count("id"), vendor_cost=Sum("vendor_cost"))
    )
    default = settings.DEFAULT_MARGIN_MULTIPLIER
    requests = affected = 0
    vendor_total = current = projected = Decimal(0)
    for group in groups:
        scope = {"tier": group["user_tier_at_request"], "provider": group["provider__name"]}
        scope["model_name"] = group["model_name"]
        before = book.margin_at(**scope, moment=moment, default=default)
        after = with_candidate.margin_at(**scope, moment=moment, default=default)
        requests += group["requests"]
        affected += group["requests"] if after != before else 0
        vendor_total += group["vendor_cost"]
        current += group["vendor_cost"] * before
        projected += group["vendor_cost"] * after
    return {
        "days": days,
        "requests": requests,
        "affected_requests": affected,
        "vendor_cost_usd": usd_round(vendor_total),
        "current_revenue_usd": usd_round(current),
        "projected_revenue_usd": usd_round(projected),
        "expected_revenue_impact_usd": usd_round(projected - current),
        "current_margin_usd": usd_round(current - vendor_total),
        "projected_margin_usd": usd_round(projected - vendor_total),
        "expected_margin_change_usd": usd_round(projected - current),
    }


# Credit packs


def credit_packs_on_sale():
    """The packs customers may buy, cheapest first."""
    return CreditPack.objects.filter(is_active=True).order_by("price", "credits", "id")


def credit_pack_sold(*, pack) -> bool:
    """Whether a purchase of the pack, by checkout or by auto-recharge, has been paid (its terms are
    then fixed)."""
    checkout = Q(kind=OperationKind.CREDIT_PACK_CHECKOUT, subject_type=resource_type_of(pack), subject_id=str(pack.pk))
    recharge = Q(kind=OperationKind.CREDIT_RECHARGE, params__pack_id=str(pack.pk))
    return PaymentOperation.objects.filter(checkout | recharge, effect=OperationEffect.SUCCEEDED).exists()
