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

        from billing_project.payments import checkout_completion_register
        from subscriptions.services import CHECKOUT_KIND_SUBSCRIPTION, subscription_checkout_complete

        checkout_completion_register(CHECKOUT_KIND_SUBSCRIPTION, subscription_checkout_complete)

        from billing_project.email_verification import email_verified
        from subscriptions.services.accounts import account_email_verified

        email_verified.connect(account_email_verified, dispatch_uid="free-tier-on-verified-email")
