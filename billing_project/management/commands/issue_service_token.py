from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from billing_project.auth import service_token_issue


class Command(BaseCommand):
    help = "Issues a service token signed with SERVICE_JWT_SECRET. The token is the last line of the output."

    def add_arguments(self, parser):
        parser.add_argument("--service", required=True, help="The calling service's name, e.g. llm-gateway.")
        parser.add_argument(
            "--scope", action="append", required=True, dest="scopes", help="A scope, e.g. usage:write (repeatable)."
        )
        parser.add_argument("--days", type=int, default=90, help="Lifetime in days (default 90).")

    def handle(self, *args, service: str, scopes: list[str], days: int, **options):
        if days <= 0:
            raise CommandError("--days must be positive.")
        token = service_token_issue(service=service, scopes=scopes, lifetime=timedelta(days=days))
        self.stdout.write(
            f"Service token for {service} with scopes {', '.join(sorted(set(scopes)))}, valid {days} days:"
        )
        self.stdout.write(token)
