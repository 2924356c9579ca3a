from django.apps import AppConfig


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Credits"

    def ready(self):
        from auditlog.registry import auditlog

        from credits.models import ModelProviderPricing, PricingConfig, Provider, UserCreditBalance, UserCreditSource

        # Object history for the console. The append-only ledgers, holds and daily summaries are their
        # own record and high-volume: they are not tracked.
        for model in (Provider, ModelProviderPricing, PricingConfig, UserCreditBalance, UserCreditSource):
            auditlog.register(model, exclude_fields=["updated_at"])
