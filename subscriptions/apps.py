from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Subscriptions and payments"

    def ready(self):
        from audit.history import history_track
        from subscriptions.models import (
            BillingInvoice,
            DunningAttempt,
            PaymentTransaction,
            ProrationEvent,
            Subscription,
            TierConfig,
            UserEntitlement,
        )

        # Object history for the console. WebhookEvent is its own record and is not tracked.
        for model in (
            TierConfig,
            Subscription,
            UserEntitlement,
            BillingInvoice,
            PaymentTransaction,
            DunningAttempt,
            ProrationEvent,
        ):
            history_track(model)

        from payments.models import OperationKind
        from payments.registry import (
            PaymentReactions,
            effect_register,
            event_fetcher_register,
            event_handler_register,
            event_reads_register,
            payment_reactions_register,
        )
        from subscriptions.services import billing, invoices, lifecycle, refunds, stripe_events, webhooks

        # What the payments that subscriptions starts do once Stripe (or the offline provider) settles them.
        effect_register(
            OperationKind.SUBSCRIPTION_CHECKOUT,
            succeeded=lifecycle.subscription_checkout_succeeded,
            failed=lifecycle.subscription_checkout_failed,
        )
        # A charge's invoice is ours (operation_invoice_correct): Stripe's later word on it corrects it.
        effect_register(
            OperationKind.UPGRADE_CHARGE,
            succeeded=lifecycle.upgrade_charge_succeeded,
            failed=lifecycle.upgrade_charge_failed,
            invoice_corrected=invoices.operation_invoice_corrected,
        )
        effect_register(
            OperationKind.RENEWAL_CHARGE,
            succeeded=billing.renewal_charge_succeeded,
            failed=billing.renewal_charge_failed,
            invoice_corrected=invoices.operation_invoice_corrected,
        )
        effect_register(
            OperationKind.DUNNING_RETRY,
            succeeded=billing.dunning_retry_succeeded,
            failed=billing.dunning_retry_failed,
            invoice_corrected=invoices.operation_invoice_corrected,
        )
        effect_register(OperationKind.REFUND, succeeded=billing.refund_succeeded)
        effect_register(OperationKind.SUBSCRIPTION_SYNC, succeeded=lifecycle.stripe_subscription_synced)
        # A refund or a dispute of a period's payment, and of an upgrade's prorated charge.
        period_payment = PaymentReactions(
            refunded_fully=refunds.subscription_payment_refunded,
            dispute_opened=refunds.subscription_payment_disputed,
            dispute_won=refunds.subscription_dispute_won,
            refund_recorded=refunds.subscription_refund_recorded,
        )
        for kind in (OperationKind.SUBSCRIPTION_CHECKOUT, OperationKind.RENEWAL_CHARGE, OperationKind.DUNNING_RETRY):
            payment_reactions_register(kind, period_payment)
        payment_reactions_register(
            OperationKind.UPGRADE_CHARGE,
            PaymentReactions(
                refunded_fully=refunds.upgrade_payment_refunded,
                dispute_opened=refunds.upgrade_payment_disputed,
                dispute_won=refunds.upgrade_dispute_won,
                refund_recorded=refunds.subscription_refund_recorded,
            ),
        )
        for handlers in (webhooks.HANDLERS, stripe_events.HANDLERS):
            for event_type, handler in handlers.items():
                event_handler_register(event_type, handler)
        for event_type, reads in webhooks.READS.items():
            event_reads_register(event_type, reads)
        for event_type, (fetcher, known) in stripe_events.FETCHERS.items():
            event_fetcher_register(event_type, fetcher, known=known)

        from billing_project.email_verification import email_verified
        from subscriptions.services.accounts import account_email_verified

        email_verified.connect(account_email_verified, dispatch_uid="free-tier-on-verified-email")
