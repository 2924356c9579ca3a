"""The vendor price list (USD per 1,000 tokens), the tier margins and the demo credit packs that
`manage.py seed_catalog` loads."""

from decimal import Decimal

PROVIDERS = [
    {"name": "openai", "display_name": "OpenAI", "api_type": "openai"},
    {"name": "anthropic", "display_name": "Anthropic", "api_type": "anthropic"},
    {"name": "google", "display_name": "Google", "api_type": "google"},
]

MODEL_PRICES = [
    {"provider": "openai", "model_name": "gpt-4-turbo", "input": "0.01", "output": "0.03"},
    {"provider": "openai", "model_name": "gpt-4o", "input": "0.005", "output": "0.015"},
    {
        "provider": "anthropic",
        "model_name": "claude-3-5-sonnet",
        "input": "0.003",
        "output": "0.015",
        "cache_input": "0.00075",
        "cache_hit": "0.0003",
    },
    {"provider": "google", "model_name": "gemini-2-0-flash", "input": "0.0000375", "output": "0.00015"},
]

TIER_MARGINS = {
    "free": Decimal("2.0"),
    "pro": Decimal("1.5"),
    "pro_max": Decimal("1.4"),
    "enterprise_pro": Decimal("1.3"),
    "enterprise_max": Decimal("1.2"),
    "perpetual": Decimal("1.5"),
}

# Credit packs on sale in a fresh install (1 credit = USD 0.001: a pack is sold at face value or below).
CREDIT_PACKS = [
    {"name": "Starter 5,000", "credits": 5_000, "price": Decimal("5.00"), "currency": "usd"},
    {"name": "Builder 25,000", "credits": 25_000, "price": Decimal("22.50"), "currency": "usd"},
    {
        "name": "Scale 120,000",
        "credits": 120_000,
        "price": Decimal("100.00"),
        "currency": "usd",
        "credit_expiry_days": 365,
    },
]
