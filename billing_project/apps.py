from django.apps import AppConfig


class BillingProjectConfig(AppConfig):
    name = "billing_project"
    verbose_name = "Platform"

    def ready(self):
        from django.conf import settings
        from django.db.models.signals import post_delete, post_save

        from billing_project import auth, checks, schema  # noqa: F401  (register the checks and schema extensions)

        # Saving or deleting a user ends what ActiveUserTokenAuthentication has cached about them.
        post_save.connect(auth.user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="active-user-saved")
        post_delete.connect(auth.user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="active-user-deleted")
