from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """Django's admin with the console's own site as the default `admin.site`."""

    default = False
    default_site = "billing_project.admin_site.ConsoleSite"


class BillingProjectConfig(AppConfig):
    name = "billing_project"
    verbose_name = "Platform"

    def ready(self):
        from django.conf import settings
        from django.core.cache import close_caches
        from django.core.signals import request_finished
        from django.db.models.signals import post_delete, post_save

        from audit.history import history_track
        from billing_project import auth, checks, gdpr, observability, schema, signin  # noqa: F401  (checks, schema)
        from billing_project.cache_breaker import cache_closes_anything
        from billing_project.models import WebhookEndpoint

        # The signing secret is a credential: its changes are not logged.
        history_track(WebhookEndpoint, exclude_fields=("updated_at", "secret"))

        # Saving or deleting a user ends what ActiveUserTokenAuthentication has cached about them.
        post_save.connect(auth.user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="active-user-saved")
        post_delete.connect(auth.user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="active-user-deleted")
        post_delete.connect(gdpr.user_deleted, sender=settings.AUTH_USER_MODEL, dispatch_uid="user-idempotency-keys")
        # The request id travels with the tasks a request sends (web side) and is restored around them (worker).
        observability.connect_celery_signals()
        # Every console and API sign-in, failed or not, is audited and logged.
        signin.connect_signals()
        # Django closes every cache after each request. When closing none of ours does anything (the
        # django-redis pool keeps its connections), that call is skipped: asking each of them was a
        # tenth of /health's CPU (bench/requests_cpu.py).
        if not any(cache_closes_anything(options) for options in settings.CACHES.values()):
            request_finished.disconnect(close_caches)
