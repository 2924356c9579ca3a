import sys

from django.core.management.base import BaseCommand
from tqdm import tqdm

from billing_project.command_arguments import user_get
from credits.services.ledger import ledger_dangling_references, ledger_figures, ledger_repair, ledger_user_ids

CHUNK = 500


class Command(BaseCommand):
    help = (
        "Proves, per user, balance == sum of grant remainders == allocations - deductions - expirations "
        "+ reversals, that lineage rows add up, and (for all users) that no ledger row names a missing "
        "row. Lists every mismatch and exits 1 if there is one; "
        "--fix rebuilds the balances and grants from the ledger, with an audit row per user."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", help="Check one user, by id or e-mail.")
        parser.add_argument("--fix", action="store_true", help="Repair what is found from the ledger.")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, user=None, fix=False, no_progress=False, **options):
        user_ids = ledger_user_ids(user_id=user_get(user).pk if user is not None else None)
        broken = []
        with tqdm(total=len(user_ids), unit="users", disable=no_progress or None, file=sys.stderr) as progress:
            for start in range(0, len(user_ids), CHUNK):
                chunk = user_ids[start : start + CHUNK]
                broken += [figures for figures in ledger_figures(user_ids=chunk) if figures.problems]
                progress.update(len(chunk))
        for figures in broken:
            for problem in figures.problems:
                self.stdout.write(f"user {figures.user_id}: {problem}")
        if user is None:
            self._dangling_references_refuse()
        if not broken:
            self.stdout.write(self.style.SUCCESS(f"Ledger consistent for {len(user_ids)} users."))
            return
        if not fix:
            self.stderr.write(self.style.ERROR(f"{len(broken)} of {len(user_ids)} users do not reconcile."))
            sys.exit(1)
        still_broken = []
        for figures in broken:
            ledger_repair(user_id=figures.user_id)
            (after,) = ledger_figures(user_ids=[figures.user_id])
            if after.problems:
                still_broken.append(after)
        if still_broken:
            for figures in still_broken:
                self.stderr.write(f"user {figures.user_id} still inconsistent: {'; '.join(figures.problems)}")
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(f"Repaired {len(broken)} users from the ledger."))

    def _dangling_references_refuse(self) -> None:
        """Ledger rows naming a row that does not exist (references the database does not check):
        listed, exit 1. Not repairable from the ledger: what the missing row was is for staff to find."""
        dangling = {reference: rows for reference, rows in ledger_dangling_references().items() if rows}
        for reference, rows in dangling.items():
            self.stdout.write(f"{reference}: {rows} rows name a row that does not exist")
        if dangling:
            self.stderr.write(self.style.ERROR(f"{sum(dangling.values())} ledger rows name missing rows."))
            sys.exit(1)
