import sys

from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from subscriptions import jobs, services


class Command(BaseCommand):
    help = (
        "Renews or ends the subscription periods that are over (free and offline-billed plans), then "
        "allocates every live subscription's credits for its current period, once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what is due, change nothing.")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, dry_run=False, no_progress=False, **options):
        now = timezone.now()
        if dry_run:
            due = len(services.subscriptions_due_for_roll_over(now=now))
            live = len(services.subscriptions_to_allocate(now=now))
            self.stdout.write(f"{due} periods are over; {live} subscriptions would have their current period checked.")
            return

        def progress(items):
            return tqdm(items, unit="subscriptions", disable=no_progress or None, file=sys.stderr)

        outcomes = jobs.monthly_credits_allocate(now=now, progress=progress)
        summary = ", ".join(f"{name}: {count}" for name, count in sorted(outcomes.items())) or "nothing to do"
        self.stdout.write(f"Done ({summary}).")
