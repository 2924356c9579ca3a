import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from billing_project.command_arguments import moment_parse
from credits.price_files import PriceFileError, price_file_parse
from credits.services import model_prices_import


class Command(BaseCommand):
    help = (
        "Imports vendor prices from FILE: the project's JSON list, or LiteLLM's "
        "model_prices_and_context_window.json (per-token prices become per-1,000; see credits.price_files for "
        "how names, regions, context tiers, service tiers and fees are read). A changed price ends the one in "
        "force; a price equal at stored precision is left alone, so running it twice changes nothing. "
        "Any refusal names the model and the whole file is left unapplied."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--effective-from", help="ISO date-time or date the new prices start (default: now).")
        parser.add_argument("--dry-run", action="store_true", help="Report what would change, change nothing.")
        parser.add_argument("--report", type=Path, help="Write every entry's result to this JSON file.")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, file: Path, effective_from=None, dry_run=False, report=None, no_progress=False, **options):
        try:
            parsed = price_file_parse(file.read_text())
        except (OSError, PriceFileError) as error:
            raise CommandError(f"Cannot read {file}: {error}") from error
        starts = moment_parse(effective_from, option="--effective-from") if effective_from else None
        summary = model_prices_import(
            rows=parsed.rows,
            effective_from=starts,
            dry_run=dry_run,
            progress=lambda rows: tqdm(rows, unit="prices", disable=no_progress or None, file=sys.stderr),
        )
        entries = [_entry(imported.row, imported.result, reason=imported.reason) for imported in summary.rows]
        refusals = [
            f"{imported.row.source} ({imported.row.provider}/{imported.row.model_name}): {imported.reason}"
            for imported in summary.refused
        ]
        entries += [{"source": skip.source, "result": "skipped", "reason": skip.reason} for skip in parsed.skipped]
        if report is not None:
            _write_report(report, parsed=parsed, entries=entries, summary=summary, dry_run=dry_run, starts=starts)
        if refusals:
            raise CommandError(f"Nothing imported: {len(refusals)} refused.\n" + "\n".join(refusals))
        verb = "Would import" if dry_run else "Imported"
        self.stdout.write(
            f"{verb} {parsed.format} file: {summary.created} new prices, {summary.unchanged} unchanged, "
            f"{summary.providers_created} new providers, {len(parsed.skipped)} entries skipped"
            + (f" (reasons in {report})." if report else " (--report FILE lists each with its reason).")
        )


def _entry(row, result: str, *, reason: str = "") -> dict:
    entry = {
        "source": row.source,
        "result": result,
        "provider": row.provider,
        "model_name": row.model_name,
        "region": row.region,
    }
    if reason:
        entry["reason"] = reason
    if row.notes:
        entry["not_billed"] = list(row.notes)
    return entry


def _write_report(path: Path, *, parsed, entries, summary, dry_run, starts) -> None:
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry["result"]] = counts.get(entry["result"], 0) + 1
    document = {
        "format": parsed.format,
        "dry_run": dry_run,
        "effective_from": starts.isoformat() if starts else None,
        "counts": counts,
        "providers_created": summary.providers_created,
        "entries": entries,
    }
    try:
        path.write_text(json.dumps(document, indent=1) + "\n")
    except OSError as error:
        raise CommandError(f"Cannot write the report {path}: {error}") from error
