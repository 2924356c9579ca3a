import sys
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from tqdm import tqdm

from audit.models import AdminAuditLog
from audit.selectors import audit_chain_verify, audit_rows_unsealed
from audit.services import audit_chain_seal


class Command(BaseCommand):
    help = (
        "Seals the committed unsealed audit rows, then verifies the hash chain of every sealed row; exits 1 "
        "naming the first broken link, or when rows stayed unsealed longer than AUDIT_UNSEALED_ALERT_SECONDS."
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")
        parser.add_argument(
            "--no-seal", action="store_true", help="Only verify (a read-only check, e.g. on a replica)."
        )

    def handle(self, *args, no_progress: bool = False, no_seal: bool = False, **options):
        if not no_seal:
            sealed = audit_chain_seal().sealed
            self.stdout.write(f"Sealed {sealed} rows.")
        total = AdminAuditLog.objects.filter(sequence__isnull=False).count()
        with tqdm(total=total, unit="rows", disable=no_progress or None, file=sys.stderr) as progress:
            problem = audit_chain_verify(on_row=progress.update)
        threshold = timedelta(seconds=settings.AUDIT_UNSEALED_ALERT_SECONDS)
        unsealed = audit_rows_unsealed(older_than=threshold)
        if problem is not None:
            self.stderr.write(self.style.ERROR(f"Audit chain broken at {problem}"))
        if unsealed.count:
            self.stderr.write(
                self.style.ERROR(
                    f"{unsealed.count} audit rows left unsealed longer than {threshold} "
                    f"(the oldest written at {unsealed.oldest.isoformat()}): is the sealer running?"
                )
            )
        if problem is not None or unsealed.count:
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {total} sealed rows."))
