from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from credits.models import ModelProviderPricing, PricingConfig, Provider
from subscriptions.models import TierConfig

pytestmark = pytest.mark.django_db


def catalog_state() -> dict:
    return {
        "tiers": list(
            TierConfig.objects.order_by("tier").values_list(
                "tier", "monthly_price_usd", "monthly_credit_allocation", "trial_days", "entitlements"
            )
        ),
        "providers": list(Provider.objects.order_by("name").values_list("name", "api_type")),
        "prices": list(
            ModelProviderPricing.objects.order_by("model_name").values_list(
                "model_name", "input_price_per_1k", "output_price_per_1k", "cache_input_price_per_1k"
            )
        ),
        "margins": list(
            PricingConfig.objects.order_by("subscription_tier").values_list(
                "subscription_tier", "margin_multiplier", "approval_status"
            )
        ),
    }


def test_seed_catalog_twice_gives_the_same_catalog():
    call_command("seed_catalog", stdout=StringIO())
    first = catalog_state()

    call_command("seed_catalog", stdout=StringIO())

    assert catalog_state() == first


def test_seed_catalog_loads_the_tiers_prices_and_margins_of_the_spec():
    call_command("seed_catalog", stdout=StringIO())

    tiers = {row.tier: row for row in TierConfig.objects.all()}
    assert {tier: (t.monthly_price_usd, t.monthly_credit_allocation) for tier, t in tiers.items()} == {
        "free": (Decimal("0.00"), 2_000),
        "pro": (Decimal("19.00"), 20_000),
        "pro_max": (Decimal("39.00"), 50_000),
        "enterprise_pro": (Decimal("149.00"), 250_000),
        "enterprise_max": (Decimal("499.00"), 1_000_000),
        "perpetual": (Decimal("0.00"), 0),
    }
    assert tiers["perpetual"].one_time_price_usd == Decimal("199.00")
    gpt4o = ModelProviderPricing.objects.get(model_name="gpt-4o")
    assert (gpt4o.input_price_per_1k, gpt4o.output_price_per_1k) == (Decimal("0.005"), Decimal("0.015"))
    sonnet = ModelProviderPricing.objects.get(model_name="claude-3-5-sonnet")
    assert (sonnet.cache_input_price_per_1k, sonnet.cache_hit_price_per_1k) == (Decimal("0.00075"), Decimal("0.0003"))
    margins = dict(PricingConfig.objects.values_list("subscription_tier", "margin_multiplier"))
    assert margins == {
        "free": Decimal("2.0"),
        "pro": Decimal("1.5"),
        "pro_max": Decimal("1.4"),
        "enterprise_pro": Decimal("1.3"),
        "enterprise_max": Decimal("1.2"),
        "perpetual": Decimal("1.5"),
    }
    assert set(PricingConfig.objects.values_list("approval_status", flat=True)) == {"approved"}


def test_seed_catalog_keeps_staff_edits():
    call_command("seed_catalog", stdout=StringIO())
    TierConfig.objects.filter(tier="pro").update(monthly_price_usd=Decimal("21.00"))

    call_command("seed_catalog", stdout=StringIO())

    assert TierConfig.objects.get(tier="pro").monthly_price_usd == Decimal("21.00")


def test_seed_catalog_dry_run_changes_nothing():
    out = StringIO()
    call_command("seed_catalog", "--dry-run", stdout=out)

    assert "Would create 6 tiers" in out.getvalue()
    assert not TierConfig.objects.exists()


def test_tiers_endpoint_is_public_and_lists_the_catalog(api_client):
    call_command("seed_catalog", stdout=StringIO())

    response = api_client.get("/api/v1/tiers/")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [tier["tier"] for tier in results] == [
        "free",
        "pro",
        "pro_max",
        "enterprise_pro",
        "enterprise_max",
        "perpetual",
    ]
    assert results[1]["monthly_price_usd"] == "19.00"
