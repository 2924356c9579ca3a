import sys

from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from subscriptions import jobs, services


class Command(BaseCommand):
    help = "Sends the trial reminders that are due, then moves ended unpaid trials to the free tier."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count the ended trials, change nothing.")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, dry_run=False, no_progress=False, **options):
        now = timezone.now()
        if dry_run:
            self.stdout.write(f"Would expire {len(services.trials_ended(now=now))} trials.")
            return

        def progress(items):
            return tqdm(items, unit="trials", disable=no_progress or None, file=sys.stderr)

        reminded = jobs.trial_reminders_send(now=now, progress=progress)
        expired = jobs.trials_expire(now=now, progress=progress)
        self.stdout.write(f"Sent {reminded} trial reminders; expired {expired} trials.")
