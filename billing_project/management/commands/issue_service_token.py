from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing_project.errors import DomainError
from billing_project.service_tokens import service_token_issue, service_token_lifetime


class Command(BaseCommand):
    help = (
        "Issues a service token signed with SERVICE_JWT_SECRET and records it (listed, and revocable, in the "
        "console). The token is the last line of the output."
    )

    def add_arguments(self, parser):
        parser.add_argument("--service", required=True, help="The calling service's name, e.g. llm-gateway.")
        parser.add_argument(
            "--scope", action="append", required=True, dest="scopes", help="A scope, e.g. usage:write (repeatable)."
        )
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help=f"Lifetime in days (default SERVICE_TOKEN_LIFETIME_DAYS, now {settings.SERVICE_TOKEN_LIFETIME_DAYS}; "
            f"at most SERVICE_TOKEN_MAX_LIFETIME_DAYS, now {settings.SERVICE_TOKEN_MAX_LIFETIME_DAYS}).",
        )

    def handle(self, *args, service: str, scopes: list[str], days: int | None, **options):
        try:
            issued = service_token_issue(service=service, scopes=scopes, lifetime=service_token_lifetime(days=days))
        except DomainError as error:
            raise CommandError(error.detail) from error
        record = issued.record
        self.stdout.write(
            f"Service token {record.pk} for {service} with scopes {', '.join(record.scopes)}, "
            f"valid until {record.expires_at:%Y-%m-%d %H:%M} UTC:"
        )
        self.stdout.write(issued.token)
