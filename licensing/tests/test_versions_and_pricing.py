from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from licensing import pricing, versions

PURCHASED = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("bought", "until"), [("1.0.0", "1.999.999"), ("1.4.2", "1.999.999"), ("2.0.0rc1", "2.999.999"), ("3", "3.999.999")]
)
def test_a_license_covers_the_end_of_its_major_line(bought, until):
    assert versions.eligible_until_for(bought) == until


@pytest.mark.parametrize(
    ("version", "covered"),
    [
        ("1.0.0", True),
        ("1.9.9", True),
        ("1.10.0", True),
        ("1.999.999", True),
        ("1.5.0rc1", True),
        ("1.9.9.post1", True),
        ("2.0.0.dev0", False),
        ("2.0.0a1", False),
        ("2.0.0rc1", False),
        ("2.0.0", False),
        ("10.0.0", False),
    ],
)
def test_coverage_of_a_1x_license_follows_pep_440_order(version, covered):
    assert versions.version_covered(eligible_until_version="1.999.999", version=version) is covered


def test_the_upgrade_target_is_the_next_major_line():
    assert versions.version_upgrade_target("1.999.999") == ("2.0.0", "2.999.999")


def test_an_invalid_version_is_refused():
    with pytest.raises(versions.InvalidVersion):
        versions.version_parse("one point two")


def quote(days_after_purchase: float, *, price="99.00", percent="20", early_days=90):
    return pricing.upgrade_quote(
        purchased_at=PURCHASED,
        now=PURCHASED + timedelta(days=days_after_purchase),
        list_price_usd=Decimal(price),
        discount_percent=Decimal(percent),
        early_days=early_days,
    )


def test_upgrade_within_the_early_window_is_discounted():
    early = quote(90)

    assert early.early is True
    assert (early.list_price_usd, early.discount_usd, early.price_usd) == (
        Decimal("99.00"),
        Decimal("19.80"),
        Decimal("79.20"),
    )


def test_upgrade_after_the_early_window_is_full_price():
    late = quote(90.001)

    assert late.early is False
    assert (late.discount_usd, late.price_usd) == (Decimal("0.00"), Decimal("99.00"))


def test_discount_is_rounded_half_up_to_cents():
    # 99.99 * 12.5% = 12.49875 -> 12.50
    rounded = quote(1, price="99.99", percent="12.5")

    assert rounded.discount_usd == Decimal("12.50")
    assert rounded.price_usd == Decimal("87.49")
