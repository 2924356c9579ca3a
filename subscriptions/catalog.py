"""The six tiers that `manage.py seed_catalog` loads (staff may edit them afterwards)."""

from decimal import Decimal

TIERS = [
    {
        "tier": "free",
        "display_name": "Free",
        "monthly_price_usd": Decimal("0"),
        "annual_price_usd": Decimal("0"),
        "monthly_credit_allocation": 2_000,
        "trial_days": 0,
        "entitlements": {
            "features": ["chat", "standard_models"],
            "max_devices": 1,
            "api_access": False,
            "support_level": "community",
        },
    },
    {
        "tier": "pro",
        "display_name": "Pro",
        "monthly_price_usd": Decimal("19"),
        "annual_price_usd": Decimal("190"),
        "monthly_credit_allocation": 20_000,
        "trial_days": 14,
        "entitlements": {
            "features": ["chat", "standard_models", "premium_models", "file_uploads"],
            "max_devices": 3,
            "api_access": True,
            "support_level": "email",
        },
    },
    {
        "tier": "pro_max",
        "display_name": "Pro Max",
        "monthly_price_usd": Decimal("39"),
        "annual_price_usd": Decimal("390"),
        "monthly_credit_allocation": 50_000,
        "trial_days": 14,
        "entitlements": {
            "features": ["chat", "standard_models", "premium_models", "file_uploads", "priority_queue"],
            "max_devices": 5,
            "api_access": True,
            "support_level": "priority",
        },
    },
    {
        "tier": "enterprise_pro",
        "display_name": "Enterprise Pro",
        "monthly_price_usd": Decimal("149"),
        "annual_price_usd": Decimal("1490"),
        "monthly_credit_allocation": 250_000,
        "trial_days": 0,
        "entitlements": {
            "features": ["chat", "standard_models", "premium_models", "file_uploads", "priority_queue", "sso"],
            "max_devices": 10,
            "api_access": True,
            "support_level": "priority",
        },
    },
    {
        "tier": "enterprise_max",
        "display_name": "Enterprise Max",
        "monthly_price_usd": Decimal("499"),
        "annual_price_usd": Decimal("4990"),
        "monthly_credit_allocation": 1_000_000,
        "trial_days": 0,
        "entitlements": {
            "features": [
                "chat",
                "standard_models",
                "premium_models",
                "file_uploads",
                "priority_queue",
                "sso",
                "audit_exports",
            ],
            "max_devices": 25,
            "api_access": True,
            "support_level": "dedicated",
        },
    },
    {
        "tier": "perpetual",
        "display_name": "Perpetual License",
        "monthly_price_usd": Decimal("0"),
        "annual_price_usd": Decimal("0"),
        "one_time_price_usd": Decimal("199"),
        "monthly_credit_allocation": 0,
        "trial_days": 0,
        "entitlements": {
            "features": ["chat", "standard_models", "premium_models", "byok"],
            "max_devices": 3,
            "api_access": False,
            "support_level": "email",
        },
    },
]
