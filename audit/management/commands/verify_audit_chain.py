import sys

from django.core.management.base import BaseCommand
from tqdm import tqdm

from audit.models import AdminAuditLog
from audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Verifies the admin audit hash chain; exits 1 and names the first broken link if it is not whole."

    def add_arguments(self, parser):
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, no_progress: bool = False, **options):
        total = AdminAuditLog.objects.count()
        with tqdm(total=total, unit="rows", disable=no_progress or None, file=sys.stderr) as progress:
            problem = audit_chain_verify(on_row=progress.update)
        if problem is not None:
            self.stderr.write(self.style.ERROR(f"Audit chain broken at {problem}"))
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {total} rows."))
