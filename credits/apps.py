from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Credits"

    def ready(self):
        from audit.history import history_track
        from credits.models import ModelProviderPricing, PricingConfig, Provider

        # Object history for the console. Balances and grants are not tracked: the ledger is their
        # history (every change writes ledger rows, through credits.services.accounts, and the console
        # links a balance to them). The append-only ledgers, holds and daily summaries are their own
        # record and high-volume: they are not tracked either.
        for model in (Provider, ModelProviderPricing, PricingConfig):
            history_track(model)
        _auto_recharge_register()

        # Any change to what prices a request, from any path (services, console, shell), makes every
        # process reload its pricing book.
        for model in (Provider, ModelProviderPricing, PricingConfig):
            post_save.connect(_pricing_changed, sender=model, dispatch_uid=f"pricing-book-{model.__name__}")
            post_delete.connect(_pricing_changed, sender=model, dispatch_uid=f"pricing-book-del-{model.__name__}")


def _auto_recharge_register():
    from audit.history import history_track
    from credits.models import AutoRecharge
    from credits.services import recharge
    from payments.models import OperationKind
    from payments.registry import PaymentReactions, effect_register, payment_reactions_register

    history_track(AutoRecharge)
    # A recharge settles here, from its own run, the invoice's webhook or reconcile.
    effect_register(
        OperationKind.CREDIT_RECHARGE, succeeded=recharge.recharge_succeeded, failed=recharge.recharge_failed
    )
    payment_reactions_register(
        OperationKind.CREDIT_RECHARGE,
        PaymentReactions(
            refunded_fully=recharge.recharge_payment_refunded,
            dispute_opened=recharge.recharge_payment_dispute_noted,
            dispute_won=recharge.recharge_payment_dispute_noted,
        ),
    )


def _pricing_changed(**kwargs):
    from credits.selectors import pricing_book_invalidate

    pricing_book_invalidate()
