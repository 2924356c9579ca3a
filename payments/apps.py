from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments"

    def ready(self):
        from django.conf import settings
        from django.db.models.signals import pre_delete

        from audit.history import history_track
        from payments.models import Payment, PaymentOperation, StripeCustomer
        from payments.registry import event_fetcher_register, event_handler_register, event_reads_register
        from payments.services import refunds
        from payments.services.handlers import FETCHERS, HANDLERS, READS

        # First in line for their event types: an event about an operation's checkout or invoice
        # settles that operation; the apps above register theirs after (INSTALLED_APPS order).
        for event_type, handler in HANDLERS.items():
            event_handler_register(event_type, handler)
        for event_type, handler in refunds.HANDLERS.items():
            event_handler_register(event_type, handler)
        for event_type, reads in READS.items():
            event_reads_register(event_type, reads)
        for event_type, fetcher in FETCHERS.items():
            event_fetcher_register(event_type, fetcher)
        # WebhookEvent and PaymentEvent are their own records and are not tracked.
        for model in (Payment, PaymentOperation, StripeCustomer):
            history_track(model)
        # Erasing a user empties the personal data of their Stripe objects kept on webhook events.
        from payments.services.privacy import user_deleting

        pre_delete.connect(user_deleting, sender=settings.AUTH_USER_MODEL, dispatch_uid="user-stripe-objects")
