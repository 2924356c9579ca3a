import sys

from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from credits.services import credits_expire, grants_spent_unclosed, users_with_overdue_grants


class Command(BaseCommand):
    help = (
        "Expires every grant past its expiry: an `expiration` ledger row each, the balance lowered; "
        "closes those spent before it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what it would do, change nothing.")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, dry_run=False, no_progress=False, **options):
        now = timezone.now()
        if dry_run:
            users = users_with_overdue_grants(now=now).count()
            spent = grants_spent_unclosed(now=now).count()
            self.stdout.write(f"Would expire grants of {users} users. Would close {spent} spent before expiry.")
            return
        bar_disabled = no_progress or None  # None: shown when stderr is a terminal
        result = credits_expire(
            now=now, progress=lambda user_ids: tqdm(user_ids, unit="users", disable=bar_disabled, file=sys.stderr)
        )
        self.stdout.write(
            f"Expired {result.expired} grants of {result.users} users. Closed {result.closed} spent before expiry."
        )
