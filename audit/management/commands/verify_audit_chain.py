import sys

from django.core.management.base import BaseCommand

from audit.models import AdminAuditLog
from audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Verifies the admin audit hash chain; exits 1 and names the first broken link if it is not whole."

    def handle(self, *args, **options):
        problem = audit_chain_verify()
        if problem is not None:
            self.stderr.write(self.style.ERROR(f"Audit chain broken at {problem}"))
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {AdminAuditLog.objects.count()} rows."))
