from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Credits"

    def ready(self):
        from audit.history import history_track
        from credits.models import AutoRecharge, CreditPack, ModelProviderPricing, PricingConfig, Provider
        from credits.services import packs, recharge
        from payments.models import OperationKind
        from payments.registry import PaymentReactions, effect_register, payment_reactions_register

        # Object history for the console. Balances and grants are not tracked: the ledger is their
        # history (every change writes ledger rows, through credits.services.accounts, and the console
        # links a balance to them). The append-only ledgers, holds and daily summaries are their own
        # record and high-volume: they are not tracked either.
        for model in (Provider, ModelProviderPricing, PricingConfig, CreditPack, AutoRecharge):
            history_track(model)

        # A paid pack checkout, from the offline provider or Stripe's webhook, grants its credits; one
        # that ends unpaid grants nothing. Its refunds and disputes take back what is left of them.
        effect_register(
            OperationKind.CREDIT_PACK_CHECKOUT,
            succeeded=packs.credit_pack_purchase_complete,
            failed=packs.credit_pack_purchase_failed,
        )
        # An auto-recharge settles from its own run, the invoice's webhook or reconcile.
        effect_register(
            OperationKind.CREDIT_RECHARGE, succeeded=recharge.recharge_succeeded, failed=recharge.recharge_failed
        )
        # A recharge buys a pack too: its refunds and disputes are a purchase's.
        for kind in (OperationKind.CREDIT_PACK_CHECKOUT, OperationKind.CREDIT_RECHARGE):
            payment_reactions_register(
                kind,
                PaymentReactions(
                    refunded_fully=packs.credit_pack_payment_refunded,
                    dispute_opened=packs.credit_pack_payment_disputed,
                    dispute_won=packs.credit_pack_dispute_won,
                    refund_recorded=packs.credit_pack_refund_recorded,
                ),
            )

        # Any change to what prices a request, from any path (services, console, shell), makes every
        # process reload its pricing book.
        for model in (Provider, ModelProviderPricing, PricingConfig):
            post_save.connect(_pricing_changed, sender=model, dispatch_uid=f"pricing-book-{model.__name__}")
            post_delete.connect(_pricing_changed, sender=model, dispatch_uid=f"pricing-book-del-{model.__name__}")


def _pricing_changed(**kwargs):
    from credits.selectors import pricing_book_invalidate

    pricing_book_invalidate()
