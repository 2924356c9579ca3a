from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit"

    def ready(self):
        from auditlog.models import LogEntry
        from django.db.models.signals import pre_save

        from audit.history import history_entry_of_request

        pre_save.connect(history_entry_of_request, sender=LogEntry, dispatch_uid="history-entry-of-request")
