"""billing_project.money: every rounding from the exact rational, once."""

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_project import money

RATIONALS = st.fractions(min_value=-(10**9), max_value=10**9, max_denominator=10**12)


@pytest.mark.parametrize(
    ("amount", "rounded"),
    [
        (Decimal("0.715"), Decimal("0.72")),
        (Fraction(39 * 11, 600), Decimal("0.72")),
        (Decimal("-0.715"), Decimal("-0.72")),
        (Decimal("0.714999"), Decimal("0.71")),
        (0, Decimal("0.00")),
        ("19.995", Decimal("20.00")),
    ],
)
def test_usd_rounds_half_up_to_cents(amount, rounded):
    assert money.usd_round(amount) == rounded
    assert str(money.usd_round(amount)) == str(rounded)


def test_floats_are_refused():
    with pytest.raises(TypeError):
        money.usd_round(0.1)


@given(value=RATIONALS)
def test_usd_rounding_equals_the_fraction_reference(value):
    cents = value * 100
    floor = cents.numerator // cents.denominator
    reference = floor + 1 if cents - floor >= Fraction(1, 2) else floor
    if value < 0:
        magnitude = -cents
        floor = magnitude.numerator // magnitude.denominator
        reference = -(floor + 1 if magnitude - floor >= Fraction(1, 2) else floor)

    assert money.usd_to_cents(value) == reference
    assert money.usd_round(value) == money.cents_to_usd(reference)


@given(value=RATIONALS)
def test_credits_floor_and_ceil_bracket_the_exact_amount(value):
    floor, ceil = money.credits_floor(value), money.credits_ceil(value)

    assert floor <= value <= ceil
    assert ceil - floor == (0 if value.denominator == 1 else 1)


@given(
    amount=st.decimals(min_value=0, max_value=10**6, places=12, allow_nan=False, allow_infinity=False),
    credit=st.sampled_from([Decimal("0.001"), Decimal("0.01"), Decimal("0.0007")]),
)
def test_credits_for_usd_never_under_charges_by_a_fraction_of_a_credit(amount, credit):
    credits = money.credits_for_usd(amount, credit_value_usd=credit)

    exact = Fraction(amount) / Fraction(credit)
    assert 0 <= credits - exact < 1


@given(value=RATIONALS)
def test_quantize_half_up_is_within_half_a_place(value):
    places = Decimal("1e-10")

    stored = money.quantize_half_up(value, places)

    assert abs(Fraction(stored) - value) <= Fraction(1, 2 * 10**10)


@pytest.mark.parametrize("places", [Decimal("0.10"), Decimal("10"), Decimal("0.07")])
def test_places_that_are_not_a_power_of_ten_are_refused_even_when_an_equal_one_was_taken(places):
    money.quantize_half_up(Decimal("1.25"), Decimal("0.1"))
    money.quantize_half_up(Decimal("1.25"), Decimal("1E+1"))

    with pytest.raises(ValueError, match="power of ten"):
        money.quantize_half_up(Decimal("1.25"), places)


# Minor units per currency

CURRENCIES = st.sampled_from(["usd", "eur", "EUR", "jpy", "krw", "clp", "kwd", "bhd", "tnd"])
EXPONENTS = {"usd": 2, "eur": 2, "jpy": 0, "krw": 0, "clp": 0, "kwd": 3, "bhd": 3, "tnd": 3}


def _half_away_from_zero(value: Fraction) -> int:
    magnitude = abs(value)
    whole = magnitude.numerator // magnitude.denominator
    rounded = whole + 1 if magnitude - whole >= Fraction(1, 2) else whole
    return rounded if value >= 0 else -rounded


@given(amount=st.integers(min_value=-(10**15), max_value=10**15), currency=CURRENCIES)
def test_minor_units_convert_to_the_exact_major_amount_and_back(amount, currency):
    exponent = EXPONENTS[currency.lower()]
    major = money.minor_to_major(amount, currency)

    assert Fraction(major) == Fraction(amount, 10**exponent)
    assert major.as_tuple().exponent == -exponent  # written to its minor unit: USD 19.00, JPY 2900
    assert money.major_to_minor(major, currency) == amount
    assert Fraction(money.minor_to_text(amount, currency)) == Fraction(amount, 10**exponent)


@given(value=RATIONALS, currency=CURRENCIES)
def test_major_to_minor_rounds_half_away_from_zero_like_the_fraction_reference(value, currency):
    exponent = EXPONENTS[currency.lower()]

    assert money.major_to_minor(value, currency) == _half_away_from_zero(value * 10**exponent)


@pytest.mark.parametrize(
    ("amount", "currency", "major", "text"),
    [
        (1900, "eur", Decimal("19.00"), "19.00"),
        (2900, "jpy", Decimal("2900"), "2900.00"),
        (19005, "kwd", Decimal("19.005"), "19.005"),
        (5, "kwd", Decimal("0.005"), "0.005"),
    ],
)
def test_the_issue_s_amounts_are_exact(amount, currency, major, text):
    assert (money.minor_to_major(amount, currency), money.minor_to_text(amount, currency)) == (major, text)
    assert str(money.minor_to_major(amount, currency)) == str(major)
