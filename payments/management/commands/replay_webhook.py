from django.core.management.base import BaseCommand, CommandError

from billing_project.errors import NotFound
from payments.models import WebhookEvent, WebhookStatus
from payments.services.inbox import webhook_replay


class Command(BaseCommand):
    help = (
        "Processes a stored Stripe event again (its handlers are idempotent), e.g. an unmatched one once its "
        "object is known; audited."
    )

    def add_arguments(self, parser):
        parser.add_argument("event_id", help="Stripe's event id, evt_...")
        parser.add_argument("--dry-run", action="store_true", help="Show the stored event, process nothing.")

    def handle(self, *args, event_id: str, dry_run: bool = False, **options):
        if dry_run:
            stored = WebhookEvent.objects.filter(event_id=event_id).first()
            if stored is None:
                raise CommandError(f"No stored webhook event {event_id}.")
            self.stdout.write(f"Would replay {stored.event_id} ({stored.event_type}), now {stored.status}.")
            return
        try:
            event = webhook_replay(event_id=event_id)
        except NotFound as error:
            raise CommandError(error.detail) from error
        if event.status == WebhookStatus.FAILED:
            raise CommandError(f"{event.event_id} failed again: {event.error}")
        if event.status == WebhookStatus.UNMATCHED:
            raise CommandError(f"{event.event_id} is still unmatched: {event.unmatched_reason}")
        self.stdout.write(f"{event.event_id} ({event.event_type}): {event.status}, result {event.result}")
