from django.core.management.base import BaseCommand, CommandError

from billing_project.errors import DomainError
from billing_project.service_tokens import service_token_revoke


class Command(BaseCommand):
    help = "Revokes one service token by its id (printed when it was issued, listed in the console)."

    def add_arguments(self, parser):
        parser.add_argument("token_id", help="The token's id.")
        parser.add_argument("--reason", default="", help="Why, for the audit trail.")

    def handle(self, *args, token_id: str, reason: str, **options):
        try:
            record = service_token_revoke(token_id=token_id, reason=reason)
        except DomainError as error:
            raise CommandError(error.detail) from error
        self.stdout.write(f"Revoked service token {record.pk} of {record.service}.")
