from django.apps import AppConfig


class BillingProjectConfig(AppConfig):
    name = "billing_project"
    verbose_name = "Platform"

    def ready(self):
        from django.conf import settings
        from django.db.models.signals import post_delete, post_save

        from billing_project import auth, checks, gdpr, observability, schema  # noqa: F401  (register checks, schema)

        # Saving or deleting a user ends what ActiveUserTokenAuthentication has cached about them.
        post_save.connect(auth.user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="active-user-saved")
        post_delete.connect(auth.user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="active-user-deleted")
        post_delete.connect(gdpr.user_deleted, sender=settings.AUTH_USER_MODEL, dispatch_uid="user-idempotency-keys")
        # The request id travels with the tasks a request sends (web side) and is restored around them (worker).
        observability.connect_celery_signals()
