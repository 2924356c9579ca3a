import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.dateparse import parse_datetime
from tqdm import tqdm

from billing_project.errors import DomainError
from credits.price_files import PriceFileError, price_file_parse
from credits.services import ImportSummary, model_price_import_row


class Command(BaseCommand):
    help = (
        "Imports vendor prices from FILE: the project's JSON list, or LiteLLM's "
        "model_prices_and_context_window.json (per-token prices become per-1,000). A changed price "
        "ends the one in force; an unchanged one is left alone, so running it twice is harmless."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--effective-from", help="ISO date-time the new prices start (default: now).")
        parser.add_argument("--dry-run", action="store_true", help="Report what would change, change nothing.")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, file: Path, effective_from=None, dry_run=False, no_progress=False, **options):
        try:
            parsed = price_file_parse(file.read_text())
        except (OSError, PriceFileError) as error:
            raise CommandError(f"Cannot read {file}: {error}") from error
        starts = parse_datetime(effective_from) if effective_from else None
        if effective_from and starts is None:
            raise CommandError(f"--effective-from '{effective_from}' is not an ISO date-time.")
        summary = ImportSummary()
        try:
            # One transaction: a file is applied whole or not at all.
            with transaction.atomic():
                for row in tqdm(parsed.rows, unit="prices", disable=no_progress or None, file=sys.stderr):
                    model_price_import_row(row=row, effective_from=starts, summary=summary)
                if dry_run:
                    transaction.set_rollback(True)
        except DomainError as error:
            raise CommandError(f"{error.code}: {error.detail}") from error
        verb = "Would import" if dry_run else "Imported"
        self.stdout.write(
            f"{verb} {parsed.format} file: {summary.created} new prices, {summary.unchanged} unchanged, "
            f"{summary.providers_created} new providers, {len(parsed.skipped)} models skipped "
            "(no price or a provider we do not sell)."
        )
