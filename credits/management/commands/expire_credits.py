import sys

from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from credits.services import credits_expire_for_user, grants_spent_close, users_with_overdue_grants


class Command(BaseCommand):
    help = (
        "Expires every grant past its expiry: an `expiration` ledger row each, the balance lowered; "
        "closes those spent before it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count the overdue grants, change nothing.")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, dry_run=False, no_progress=False, **options):
        now = timezone.now()
        user_ids = list(users_with_overdue_grants(now=now))
        if dry_run:
            self.stdout.write(f"Would expire grants of {len(user_ids)} users.")
            return
        closed = grants_spent_close(now=now)
        expired = 0
        for user_id in tqdm(user_ids, unit="users", disable=no_progress or None, file=sys.stderr):
            expired += credits_expire_for_user(user_id=user_id, now=now)
        self.stdout.write(f"Expired {expired} grants of {len(user_ids)} users. Closed {closed} spent before expiry.")
