import sys
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from billing_project.command_arguments import day_parse
from coupons.services.analytics import coupon_analytics_snapshot
from credits.services.ledger import days_between


class Command(BaseCommand):
    help = "Rebuilds the daily coupon analytics snapshots for a date range (default: yesterday). Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="date_from", help="First day, YYYY-MM-DD (default: yesterday).")
        parser.add_argument("--to", dest="date_to", help="Last day, YYYY-MM-DD (default: --from).")
        parser.add_argument("--dry-run", action="store_true", help="Count the rows it would write, change nothing.")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, date_from=None, date_to=None, dry_run=False, no_progress=False, **options):
        start = day_parse(date_from, option="--from") if date_from else timezone.localdate() - timedelta(days=1)
        end = day_parse(date_to, option="--to") if date_to else start
        if start > end:
            raise CommandError(f"--from {start} is after --to {end}.")
        rows = 0
        with transaction.atomic():
            for day in tqdm(days_between(start, end), unit="days", disable=no_progress or None, file=sys.stderr):
                rows += coupon_analytics_snapshot(day=day)
            if dry_run:
                transaction.set_rollback(True)
        verb = "Would write" if dry_run else "Wrote"
        self.stdout.write(f"{verb} {rows} coupon snapshot rows for {start} to {end}.")
