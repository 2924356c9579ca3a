from django.apps import AppConfig


class BillingProjectConfig(AppConfig):
    name = "billing_project"
    verbose_name = "Platform"

    def ready(self):
        from billing_project import checks, schema  # noqa: F401  (register the checks and schema extensions)
