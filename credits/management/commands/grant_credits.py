from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from billing_project.command_arguments import moment_parse, user_get
from billing_project.errors import DomainError
from credits.services import credit_grant_by_staff


class Command(BaseCommand):
    help = "Grants credits to a user (source admin_grant, or --source bonus/referral), audited."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="The user's e-mail or id.")
        parser.add_argument("--amount", required=True, type=int, help="Credits (1 credit = CREDIT_VALUE_USD).")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--expires-at", help="ISO date-time or date of expiry, naive = UTC (default: never).")
        parser.add_argument("--source", default="admin_grant", choices=["admin_grant", "bonus", "referral"])
        parser.add_argument("--dry-run", action="store_true", help="Check and report, change nothing.")

    def handle(self, *args, user, amount, reason, expires_at=None, source="admin_grant", dry_run=False, **options):
        account = user_get(user)
        expiry = moment_parse(expires_at, option="--expires-at") if expires_at else None
        try:
            with transaction.atomic():
                result = credit_grant_by_staff(
                    user=account, amount=amount, reason=reason, expires_at=expiry, source=source
                )
                if dry_run:
                    transaction.set_rollback(True)
        except DomainError as error:
            raise CommandError(f"{error.code}: {error.detail}") from error
        verb = "Would grant" if dry_run else "Granted"
        self.stdout.write(f"{verb} {amount} credits to {account.email}; balance after: {result.balance_after}.")
