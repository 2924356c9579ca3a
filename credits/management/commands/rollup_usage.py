import sys
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from billing_project.command_arguments import day_parse
from credits.services.ledger import days_between, usage_rollup_day


class Command(BaseCommand):
    help = "Rebuilds the daily usage summaries of a date range (UTC days) from the ledgers. Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="date_from", help="First day, YYYY-MM-DD (default: yesterday).")
        parser.add_argument("--to", dest="date_to", help="Last day, YYYY-MM-DD (default: --from).")
        parser.add_argument("--dry-run", action="store_true", help="Compute the rows, keep nothing.")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, date_from=None, date_to=None, dry_run=False, no_progress=False, **options):
        start = day_parse(date_from, option="--from") if date_from else timezone.now().date() - timedelta(days=1)
        end = day_parse(date_to, option="--to") if date_to else start
        if start > end:
            raise CommandError(f"--from {start} is after --to {end}.")
        rows = 0
        with transaction.atomic():
            for day in tqdm(days_between(start, end), unit="days", disable=no_progress or None, file=sys.stderr):
                rows += usage_rollup_day(day=day)
            if dry_run:
                transaction.set_rollback(True)
        verb = "Would write" if dry_run else "Wrote"
        self.stdout.write(f"{verb} {rows} summary rows for {start} to {end}.")
