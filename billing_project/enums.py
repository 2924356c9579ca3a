"""Vocabulary shared by several apps. Lives here so that lower apps (credits) can use the tier
names without importing subscriptions, which sits above them."""

from django.db import models


class SubscriptionTier(models.TextChoices):
    FREE = "free", "Free"
    PRO = "pro", "Pro"
    PRO_MAX = "pro_max", "Pro Max"
    ENTERPRISE_PRO = "enterprise_pro", "Enterprise Pro"
    ENTERPRISE_MAX = "enterprise_max", "Enterprise Max"
    PERPETUAL = "perpetual", "Perpetual"


class BillingCycle(models.TextChoices):
    MONTHLY = "monthly", "Monthly"
    ANNUAL = "annual", "Annual"
