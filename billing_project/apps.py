from django.apps import AppConfig


class BillingProjectConfig(AppConfig):
    name = "billing_project"
    verbose_name = "Platform"

    def ready(self):
        from billing_project import checks  # noqa: F401  (registers the production checks)
