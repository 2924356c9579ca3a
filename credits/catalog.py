"""The vendor price list and the tier margins that `manage.py seed_catalog` loads (USD per 1,000 tokens)."""

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
