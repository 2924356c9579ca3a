from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from billing_project.errors import DomainError
from payments.services.operations import stripe_active
from subscriptions.services.reconcile import stripe_reconcile


def since_parse(value: str) -> datetime:
    """A date (midnight UTC) or an ISO 8601 time (UTC when it names no offset), not in the future."""
    try:
        moment = parse_datetime(value) or (
            datetime.combine(day, time.min, tzinfo=UTC) if (day := parse_date(value)) else None
        )
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"--since must be a date (YYYY-MM-DD) or an ISO 8601 time, not {value!r}.")
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    if moment > timezone.now():
        raise CommandError(f"--since {value} is in the future.")
    return moment


class Command(BaseCommand):
    help = (
        "Compares Stripe's subscriptions, invoices, refunds and disputes of a window with ours and prints "
        "every difference, one a line, then a summary; exits 1 while differences remain. With --fix, applies "
        "Stripe's state through the webhook handlers (a synthetic event per object, stored and audited)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--since",
            help="A date (YYYY-MM-DD, UTC) or an ISO 8601 time; default: STRIPE_RECONCILE_DAYS days ago.",
        )
        parser.add_argument("--fix", action="store_true", help="Apply Stripe's state through the webhook handlers.")

    def handle(self, *args, since: str | None = None, fix: bool = False, **options):
        start = since_parse(since) if since else timezone.now() - timedelta(days=settings.STRIPE_RECONCILE_DAYS)
        if not stripe_active():
            raise CommandError("Payments run on the offline provider: there is no Stripe to reconcile with.")
        try:
            result = stripe_reconcile(since=start, fix=fix)
        except DomainError as error:
            raise CommandError(f"Stripe could not be read: {error.detail}") from error
        for difference in result.found:
            self.stdout.write(str(difference))
        for event in result.applied:
            self.stdout.write(f"applied {event.event_id} ({event.event_type}): {event.status}")
        for invoice_id in result.documents_updated:
            self.stdout.write(f"applied invoice {invoice_id} documents")
        if fix:
            for difference in result.remaining:
                self.stdout.write(f"still differs: {difference}")
        compared = ", ".join(f"{count} {kind}" for kind, count in result.compared.items())
        outcome = f"{len(result.found)} difference(s)"
        if fix:
            outcome += f", {len(result.applied)} event(s) applied, {len(result.remaining)} remaining"
        self.stdout.write(f"Compared {compared} since {start.isoformat()}: {outcome}.")
        if result.remaining:
            raise CommandError(f"{len(result.remaining)} difference(s) with Stripe remain.")
