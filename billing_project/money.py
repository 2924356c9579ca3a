"""Exact money arithmetic, in one place.

USD amounts are `Decimal`; anything computed from a share of something (a fraction of a period, a
margin over a vendor cost) is carried as an exact rational (`fractions.Fraction`) and rounded once,
at the end: USD half-up to cents, credits down (what a user is given) or up (what a user is charged).
Nothing here divides before it multiplies, so no intermediate rounding can move a result by a cent
or a credit.
"""

from decimal import ROUND_CEILING, ROUND_HALF_UP, Context, Decimal
from fractions import Fraction

CENT = Decimal("0.01")
CENTS_PER_USD = 100
ZERO_USD = Decimal("0.00")

Exact = int | Decimal | Fraction


def exact(value: Exact | str) -> Fraction:
    """The exact rational value of an int, a Decimal, a Fraction or a decimal string (never a float)."""
    if isinstance(value, float):
        raise TypeError("money is never a float")
    return Fraction(value)


def round_half_up(value: Fraction) -> int:
    """The nearest integer, halves away from zero."""
    magnitude = (abs(value.numerator) * 2 + value.denominator) // (2 * value.denominator)
    return magnitude if value >= 0 else -magnitude


# Wide enough that Decimal arithmetic on money here is exact (no rounding until a result is quantized).
EXACT = Context(prec=80)


def usd_round(amount: Exact | str) -> Decimal:
    """USD rounded half-up to cents: 0.715 -> 0.72, -0.715 -> -0.72."""
    if isinstance(amount, Decimal):
        return amount.quantize(CENT, rounding=ROUND_HALF_UP, context=EXACT)
    return cents_to_usd(usd_to_cents(amount))


def usd_to_cents(amount: Exact | str) -> int:
    """Whole cents of a USD amount, rounded half-up (Stripe's integer amounts)."""
    return round_half_up(exact(amount) * CENTS_PER_USD)


def cents_to_usd(cents: int) -> Decimal:
    """A Decimal USD amount with two places from whole cents."""
    return Decimal(f"{cents}E-2")


# The `places` found to be powers of ten, each kept as itself: checking costs the usage path a
# microsecond per event, and callers pass the same few constants. Looked up by identity, since an
# equal Decimal may have other digits (0.10 is 0.1, but quantizes to two places).
_POWERS_OF_TEN: dict[Decimal, Decimal] = {}


def quantize_half_up(amount: Exact | str, places: Decimal) -> Decimal:
    """A Decimal rounded half-up to `places` (e.g. Decimal("1e-10") for a stored cost), from the exact value."""
    if _POWERS_OF_TEN.get(places) is not places:
        if places.as_tuple().digits != (1,):
            raise ValueError("places must be a power of ten")
        _POWERS_OF_TEN[places] = places
    if isinstance(amount, Decimal):  # the fast path of the usage hot path; the same result
        return amount.quantize(places, rounding=ROUND_HALF_UP, context=EXACT)
    return Decimal(f"{round_half_up(exact(amount) / exact(places))}E{places.adjusted()}")


def credits_floor(value: Exact | str) -> int:
    """Whole credits given for an exact amount of credits: rounded down."""
    number = exact(value)
    return number.numerator // number.denominator


def credits_ceil(value: Exact | str) -> int:
    """Whole credits charged for an exact amount of credits: rounded up (never under-charged)."""
    number = exact(value)
    return -(-number.numerator // number.denominator)


def credits_for_usd(amount_usd: Exact | str, *, credit_value_usd: Exact | str) -> int:
    """Credits charged for a USD value: ceil(amount / value of one credit), exactly."""
    if isinstance(amount_usd, Decimal) and isinstance(credit_value_usd, Decimal):
        # The hot path: a quotient rounded to 80 digits, then checked with exact products.
        credits = int(EXACT.divide(amount_usd, credit_value_usd).to_integral_value(rounding=ROUND_CEILING))
        while EXACT.multiply(credits, credit_value_usd) < amount_usd:
            credits += 1
        while EXACT.multiply(credits - 1, credit_value_usd) >= amount_usd:
            credits -= 1
        return credits
    return credits_ceil(exact(amount_usd) / exact(credit_value_usd))


# Currencies whose minor unit is not a hundredth, as Stripe lists them (amounts on Stripe's objects are
# integers in the minor unit): zero-decimal ones count whole units, three-decimal ones thousandths.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def minor_unit_exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit: jpy 0, usd 2, kwd 3."""
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def minor_to_major(amount: int, currency: str) -> Decimal:
    """A Decimal amount in the currency's major unit from an integer of minor units (JPY 2900 -> 2900)."""
    return Decimal(f"{amount}E-{minor_unit_exponent(currency)}") if minor_unit_exponent(currency) else Decimal(amount)


def major_to_minor(amount: Exact | str, currency: str) -> int:
    """Integer minor units of an amount in the major unit, rounded half-up (EUR 19.005 -> 1901)."""
    return round_half_up(exact(amount) * 10 ** minor_unit_exponent(currency))


def minor_to_text(amount: int, currency: str) -> str:
    """An amount for JSON: the major unit with at least two decimals, exact (JPY 2900 -> "2900.00",
    KWD 19005 -> "19.005")."""
    places = max(2, minor_unit_exponent(currency))
    return f"{minor_to_major(amount, currency):.{places}f}"
