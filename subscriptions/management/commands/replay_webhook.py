from django.core.management.base import BaseCommand, CommandError

from billing_project.errors import NotFound
from subscriptions.models import WebhookStatus
from subscriptions.services import webhook_replay


class Command(BaseCommand):
    help = "Processes a stored Stripe event again (its handlers are idempotent); audited."

    def add_arguments(self, parser):
        parser.add_argument("event_id", help="Stripe's event id, evt_...")

    def handle(self, *args, event_id: str, **options):
        try:
            event = webhook_replay(event_id=event_id)
        except NotFound as error:
            raise CommandError(error.detail) from error
        if event.status == WebhookStatus.FAILED:
            raise CommandError(f"{event.event_id} failed again: {event.error}")
        self.stdout.write(f"{event.event_id} ({event.event_type}): {event.status}, result {event.result}")
