from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Subscriptions and payments"

    def ready(self):
        from auditlog.registry import auditlog

        from credits.selectors import tier_lookup_register
        from subscriptions.models import (
            BillingInvoice,
            DunningAttempt,
            PaymentTransaction,
            ProrationEvent,
            Subscription,
            TierConfig,
            UserEntitlement,
        )
        from subscriptions.selectors import tier_and_subscription_for

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
            auditlog.register(model, exclude_fields=["updated_at"])

        tier_lookup_register(tier_and_subscription_for)

        from payments.models import OperationKind
        from payments.registry import (
            PaymentReactions,
            effect_register,
            event_handler_register,
            payment_reactions_register,
        )
        from subscriptions.services import billing, lifecycle, refunds, webhooks

        # What the payments that subscriptions starts do once Stripe (or the offline provider) settles them.
        effect_register(
            OperationKind.SUBSCRIPTION_CHECKOUT,
            succeeded=lifecycle.subscription_checkout_succeeded,
            failed=lifecycle.subscription_checkout_failed,
        )
        effect_register(
            OperationKind.UPGRADE_CHARGE,
            succeeded=lifecycle.upgrade_charge_succeeded,
            failed=lifecycle.upgrade_charge_failed,
        )
        effect_register(
            OperationKind.RENEWAL_CHARGE,
            succeeded=billing.renewal_charge_succeeded,
            failed=billing.renewal_charge_failed,
        )
        effect_register(
            OperationKind.DUNNING_RETRY, succeeded=billing.dunning_retry_succeeded, failed=billing.dunning_retry_failed
        )
        effect_register(OperationKind.REFUND, succeeded=billing.refund_succeeded)
        effect_register(OperationKind.SUBSCRIPTION_SYNC, succeeded=lifecycle.stripe_subscription_synced)
        # A refund or a dispute of a period's payment (an upgrade's prorated charge is only recorded).
        period_payment = PaymentReactions(
            refunded_fully=refunds.subscription_payment_refunded,
            dispute_opened=refunds.subscription_payment_disputed,
            dispute_won=refunds.subscription_dispute_won,
            refund_recorded=refunds.subscription_refund_recorded,
        )
        for kind in (OperationKind.SUBSCRIPTION_CHECKOUT, OperationKind.RENEWAL_CHARGE, OperationKind.DUNNING_RETRY):
            payment_reactions_register(kind, period_payment)
        for event_type, handler in webhooks.HANDLERS.items():
            event_handler_register(event_type, handler)

        from billing_project.email_verification import email_verified
        from subscriptions.services.accounts import account_email_verified

        email_verified.connect(account_email_verified, dispatch_uid="free-tier-on-verified-email")
