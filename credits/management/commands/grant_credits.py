from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.dateparse import parse_datetime

from billing_project.errors import DomainError
from credits.services import credit_grant_by_staff


class Command(BaseCommand):
    help = "Grants credits to a user (source admin_grant, or --source bonus/referral), audited."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="The user's e-mail or id.")
        parser.add_argument("--amount", required=True, type=int, help="Credits (1 credit = CREDIT_VALUE_USD).")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--expires-at", help="ISO date-time after which the credits expire (default: never).")
        parser.add_argument("--source", default="admin_grant", choices=["admin_grant", "bonus", "referral"])
        parser.add_argument("--dry-run", action="store_true", help="Check and report, change nothing.")

    def handle(self, *args, user, amount, reason, expires_at=None, source="admin_grant", dry_run=False, **options):
        users = get_user_model().objects
        account = users.filter(pk=int(user)).first() if user.isdigit() else users.filter(email__iexact=user).first()
        if account is None:
            raise CommandError(f"No user '{user}'.")
        expiry = parse_datetime(expires_at) if expires_at else None
        if expires_at and expiry is None:
            raise CommandError(f"--expires-at '{expires_at}' is not an ISO date-time.")
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
