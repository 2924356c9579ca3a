"""The price of a request: SPEC 2's seed checks, price history, margin precedence, rounding."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from credits import pricing
from credits.models import ApprovalStatus, PricingScope, Provider
from credits.selectors import pricing_book
from credits.services import model_price_create
from credits.tests.factories import PricingConfigFactory, ProviderFactory
from credits.usage_objects import COMPONENTS, TokenBreakdown

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CREDIT = Decimal("0.001")
GPT_4O = pricing.VendorPrice(
    id=1,
    provider="openai",
    model_name="gpt-4o",
    input_per_1k=Decimal("0.005"),
    output_per_1k=Decimal("0.015"),
    cache_write_per_1k=None,
    cache_read_per_1k=None,
    effective_from=T0,
)
SONNET = pricing.VendorPrice(
    id=2,
    provider="anthropic",
    model_name="claude-3-5-sonnet",
    input_per_1k=Decimal("0.003"),
    output_per_1k=Decimal("0.015"),
    cache_write_per_1k=Decimal("0.00075"),
    cache_read_per_1k=Decimal("0.0003"),
    effective_from=T0,
)


@pytest.mark.parametrize(("margin", "credits"), [("1.5", 53), ("2.0", 70)])
def test_seed_example_costs_53_credits_at_1_5_and_70_at_2_0(margin, credits):
    tokens = TokenBreakdown(input=1000, output=2000)

    quote = pricing.quote(price=GPT_4O, tokens=tokens, margin=Decimal(margin), credit_value_usd=CREDIT)

    assert quote.vendor_cost == Decimal("0.035")
    assert quote.credits == credits
    assert quote.gross_margin_usd == quote.credit_value_usd - Decimal("0.035")


def test_cache_tokens_are_priced_at_the_cache_prices():
    tokens = TokenBreakdown(input=1000, output=1000, cache_write_5m=2000, cache_read=10000)

    quote = pricing.quote(price=SONNET, tokens=tokens, margin=Decimal("1"), credit_value_usd=CREDIT)

    # 0.003 + 0.015 + 2 x 0.00075 + 10 x 0.0003
    assert quote.vendor_cost == Decimal("0.0225")
    assert quote.credits == 23


def test_cache_tokens_of_a_model_without_cache_prices_cost_the_input_price():
    tokens = TokenBreakdown(cache_read=1000)

    assert pricing.vendor_cost(GPT_4O, tokens) == Decimal("0.005")


def test_the_price_in_force_at_the_request_start_applies():
    noon = T0 + timedelta(hours=12)
    old = replace(GPT_4O, effective_until=noon)
    new = replace(GPT_4O, id=3, input_per_1k=Decimal("0.0025"), effective_from=noon)
    book = pricing.PricingBook(prices={("openai", "gpt-4o"): [old, new]}, providers={"openai": 1})

    morning = book.price_at(provider="openai", model_name="gpt-4o", moment=noon - timedelta(seconds=1))
    afternoon = book.price_at(provider="openai", model_name="gpt-4o", moment=noon)

    assert (morning.id, afternoon.id) == (1, 3)
    assert book.price_at(provider="openai", model_name="gpt-4o", moment=T0 - timedelta(days=1)) is None


def rule(level, multiplier, **scope):
    return pricing.MarginRule(id=multiplier, level=level, multiplier=Decimal(multiplier), effective_from=T0, **scope)


ALL_LEVELS = [
    rule(pricing.LEVEL_TIER, "1.1", tier="pro"),
    rule(pricing.LEVEL_PROVIDER, "1.2", provider="openai"),
    rule(pricing.LEVEL_MODEL, "1.3", model_name="gpt-4o"),
    rule(pricing.LEVEL_COMBINATION, "1.4", tier="pro", provider="openai", model_name="gpt-4o"),
]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (ALL_LEVELS, "1.4"),  # tier+provider+model wins over everything
        (ALL_LEVELS[:3], "1.3"),  # then the model
        (ALL_LEVELS[:2], "1.2"),  # then the provider
        (ALL_LEVELS[:1], "1.1"),  # then the tier
        ([], "1.5"),  # then the global default
    ],
)
def test_the_most_specific_margin_wins(rules, expected):
    book = pricing.PricingBook(margins=rules)

    margin = book.margin_at(tier="pro", provider="openai", model_name="gpt-4o", moment=T0, default=Decimal("1.5"))

    assert margin == Decimal(expected)


def test_margins_of_other_scopes_or_out_of_their_period_do_not_apply():
    rules = [
        rule(pricing.LEVEL_TIER, "3.0", tier="free"),
        rule(pricing.LEVEL_MODEL, "3.1", model_name="gpt-4-turbo"),
        pricing.MarginRule(
            id=9,
            level=pricing.LEVEL_PROVIDER,
            multiplier=Decimal("3.2"),
            provider="openai",
            effective_from=T0 + timedelta(days=1),
        ),
    ]
    book = pricing.PricingBook(margins=rules)

    margin = book.margin_at(tier="pro", provider="openai", model_name="gpt-4o", moment=T0, default=Decimal("1.5"))

    assert margin == Decimal("1.5")


SCOPE_VALUES = {
    "tier": ["", "pro", "free"],
    "provider": ["", "openai", "anthropic"],
    "model_name": ["", "gpt-4o", "o1"],
}
MARGIN_RULES = st.lists(
    st.builds(
        pricing.MarginRule,
        id=st.integers(),
        level=st.integers(min_value=pricing.LEVEL_TIER, max_value=pricing.LEVEL_COMBINATION),
        multiplier=st.decimals(min_value=Decimal("1"), max_value=Decimal("3"), places=2),
        effective_from=st.integers(min_value=-3, max_value=3).map(lambda days: T0 + timedelta(days=days)),
        effective_until=st.none() | st.integers(min_value=-3, max_value=5).map(lambda days: T0 + timedelta(days=days)),
        **{name: st.sampled_from(values) for name, values in SCOPE_VALUES.items()},
    ),
    max_size=12,
)


@given(
    rules=MARGIN_RULES,
    tier=st.sampled_from(SCOPE_VALUES["tier"][1:]),
    provider=st.sampled_from(SCOPE_VALUES["provider"][1:]),
    model_name=st.sampled_from(SCOPE_VALUES["model_name"][1:]),
)
def test_the_margin_is_the_best_of_every_rule_that_applies_however_the_rules_are_looked_up(
    rules, tier, provider, model_name
):
    book = pricing.PricingBook(margins=rules)

    margin = book.margin_at(tier=tier, provider=provider, model_name=model_name, moment=T0, default=Decimal("9"))

    # The reference: every rule looked at.
    applicable = [
        rule
        for rule in rules
        if rule.tier in ("", tier)
        and rule.provider in ("", provider)
        and rule.model_name in ("", model_name)
        and rule.effective_from <= T0
        and (rule.effective_until is None or rule.effective_until > T0)
    ]
    rank = max((rule.level, rule.effective_from) for rule in applicable) if applicable else None
    # Rules of one level taking effect at the same moment tie: any of theirs is the best.
    best = {rule.multiplier for rule in applicable if (rule.level, rule.effective_from) == rank}
    assert margin in (best or {Decimal("9")})


def test_a_book_given_other_margins_applies_them():
    book = pricing.PricingBook(margins=[rule(pricing.LEVEL_TIER, "1.1", tier="pro")])
    book.margin_at(tier="pro", provider="openai", model_name="gpt-4o", moment=T0, default=Decimal("1.5"))

    book.margins = [rule(pricing.LEVEL_MODEL, "1.3", model_name="gpt-4o")]

    margin = book.margin_at(tier="pro", provider="openai", model_name="gpt-4o", moment=T0, default=Decimal("1.5"))
    assert margin == Decimal("1.3")


PRICES = st.decimals(min_value=Decimal("0"), max_value=Decimal("1"), places=7)
TOKENS = st.integers(min_value=0, max_value=5_000_000)
MARGINS = st.decimals(min_value=Decimal("0.5"), max_value=Decimal("10"), places=4)


@given(
    input_price=PRICES,
    output_price=PRICES,
    cache_price=PRICES,
    input_tokens=TOKENS,
    output_tokens=TOKENS,
    cached=TOKENS,
    margin=MARGINS,
)
def test_credits_never_under_charge_nor_exceed_the_exact_value_by_a_credit(
    input_price, output_price, cache_price, input_tokens, output_tokens, cached, margin
):
    price = pricing.VendorPrice(
        id=1,
        provider="p",
        model_name="m",
        input_per_1k=input_price,
        output_per_1k=output_price,
        cache_write_per_1k=None,
        cache_read_per_1k=cache_price,
        effective_from=T0,
    )
    tokens = TokenBreakdown(input=input_tokens, output=output_tokens, cache_read=cached)

    quote = pricing.quote(price=price, tokens=tokens, margin=margin, credit_value_usd=CREDIT)

    # The reference: exact rational arithmetic, no rounding anywhere.
    exact_usd = (
        (
            Fraction(input_tokens) * Fraction(input_price)
            + Fraction(output_tokens) * Fraction(output_price)
            + Fraction(cached) * Fraction(cache_price)
        )
        / 1000
        * Fraction(margin)
    )
    exact_credits = exact_usd / Fraction(CREDIT)
    assert quote.credits >= exact_credits
    assert quote.credits - exact_credits < 1


@pytest.mark.django_db
def test_pricing_book_is_reloaded_once_a_price_change_commits(
    price_catalog, staff_user, django_capture_on_commit_callbacks
):
    before = pricing_book().price_at(provider="openai", model_name="gpt-4o", moment=datetime.now(UTC))

    with django_capture_on_commit_callbacks(execute=True):
        model_price_create(
            provider=Provider.objects.get(name="openai"),
            model_name="gpt-4o",
            input_price_per_1k=Decimal("0.0025"),
            output_price_per_1k=Decimal("0.01"),
            actor=staff_user,
        )

    after = pricing_book().price_at(provider="openai", model_name="gpt-4o", moment=datetime.now(UTC))
    assert before.input_per_1k == Decimal("0.005")
    assert after.input_per_1k == Decimal("0.0025")


@pytest.mark.django_db
def test_pricing_book_counts_only_approved_active_margins():
    approved = PricingConfigFactory(approved=True, subscription_tier="pro", margin_multiplier=Decimal("1.7"))
    PricingConfigFactory(subscription_tier="pro", margin_multiplier=Decimal("9"))  # pending
    PricingConfigFactory(
        subscription_tier="pro", margin_multiplier=Decimal("8"), approval_status=ApprovalStatus.REJECTED
    )
    ProviderFactory()

    margins = pricing_book().margins

    assert [margin.id for margin in margins] == [approved.pk]
    assert margins[0].level == pricing.LEVEL_TIER
    assert approved.scope_type == PricingScope.TIER


# The price book's dimensions, against an exact reference

COMPONENT_PRICES = st.fixed_dictionaries(
    {component: st.decimals(min_value=0, max_value=Decimal("0.2"), places=9) for component in COMPONENTS}
)
COUNTS = st.integers(min_value=0, max_value=2_000_000_000)


def _price_of(base: dict, tier: dict, threshold: int, batch: dict, fee: Decimal) -> pricing.VendorPrice:
    return pricing.VendorPrice(
        id=1,
        provider="p",
        model_name="m",
        input_per_1k=base["input"],
        output_per_1k=base["output"],
        cache_write_per_1k=base["cache_write_5m"],
        cache_read_per_1k=base["cache_read"],
        cache_write_1h_per_1k=base["cache_write_1h"],
        reasoning_per_1k=base["reasoning"],
        audio_input_per_1k=base["audio_input"],
        audio_output_per_1k=base["audio_output"],
        image_output_per_1k=base["image_output"],
        context_tiers=(pricing.ContextTier(above_tokens=threshold, prices=tier),),
        service_tiers={"batch": pricing.ServicePrices(prices=batch)},
        fees={"web_search": fee},
        effective_from=T0,
    )


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    base=COMPONENT_PRICES,
    tier=COMPONENT_PRICES,
    batch=COMPONENT_PRICES,
    threshold=st.integers(min_value=1, max_value=3_000_000_000),
    counts=st.fixed_dictionaries({component: COUNTS for component in COMPONENTS}),
    service_tier=st.sampled_from(["standard", "batch", "flex"]),
    searches=st.integers(min_value=0, max_value=100),
    fee=st.decimals(min_value=0, max_value=1, places=4),
    margin=MARGINS,
)
def test_cost_and_credits_equal_the_exact_fraction_reference(
    base, tier, batch, threshold, counts, service_tier, searches, fee, margin
):
    price = _price_of(base, tier, threshold, batch, fee)
    tokens = TokenBreakdown(**counts)

    quote = pricing.quote(
        price=price,
        tokens=tokens,
        margin=margin,
        credit_value_usd=CREDIT,
        service_tier=service_tier,
        fee_units={"web_search": searches} if searches else {},
    )

    # The reference: above the threshold every component takes the tier's price; a batch request
    # takes the batch price, or when both apply the higher of the two; flex has no prices: standard.
    above = tokens.input_total > threshold
    expected = Fraction(searches) * Fraction(fee)
    for component in COMPONENTS:
        rate = Fraction(base[component])
        if above and service_tier == "batch":
            rate = max(Fraction(tier[component]), Fraction(batch[component]))
        elif above:
            rate = Fraction(tier[component])
        elif service_tier == "batch":
            rate = Fraction(batch[component])
        expected += Fraction(counts[component]) * rate / 1000
    assert Fraction(quote.vendor_cost) == expected
    exact_credits = expected * Fraction(margin) / Fraction(CREDIT)
    assert quote.credits == -(-exact_credits.numerator // exact_credits.denominator)
    assert Fraction(quote.gross_margin_usd) == expected * Fraction(margin) - expected


def test_a_component_without_a_price_takes_its_parents():
    price = replace(GPT_4O, reasoning_per_1k=None, cache_write_1h_per_1k=None, cache_write_per_1k=Decimal("0.00625"))

    rates = price.rates(service_tier="standard", input_tokens=10)

    assert rates["reasoning"] == rates["audio_output"] == rates["image_output"] == Decimal("0.015")
    assert rates["cache_read"] == rates["audio_input"] == Decimal("0.005")
    assert rates["cache_write_1h"] == rates["cache_write_5m"] == Decimal("0.00625")


def test_the_whole_request_takes_the_tier_price_above_the_threshold():
    tiered = replace(
        GPT_4O,
        context_tiers=(
            pricing.ContextTier(above_tokens=1000, prices={"input": Decimal("0.01"), "output": Decimal("0.03")}),
        ),
    )

    at = pricing.vendor_cost(tiered, TokenBreakdown(input=1000, output=1000))
    over = pricing.vendor_cost(tiered, TokenBreakdown(input=600, cache_read=401, output=1000))

    assert at == Decimal("0.020")  # 1000 x 0.005 + 1000 x 0.015
    assert over == Decimal("0.04001")  # (600 + 401 cache reads at the tier input) x 0.01 + 1000 x 0.03, per 1k


def test_a_regional_price_applies_to_requests_in_its_region_only():
    eu = replace(GPT_4O, id=2, region="eu", input_per_1k=Decimal("0.0055"))
    book = pricing.PricingBook(prices={("openai", "gpt-4o"): [GPT_4O, eu]}, providers={"openai": 1})

    assert book.price_at(provider="openai", model_name="gpt-4o", moment=T0, region="eu").id == 2
    assert book.price_at(provider="openai", model_name="gpt-4o", moment=T0, region="us").id == 1
    assert book.price_at(provider="openai", model_name="gpt-4o", moment=T0).id == 1
