"""The admin login of a local demo: `scripts/dev` runs this after seeding, so the console is one click away.

With DEBUG on, staff need no second factor unless STAFF_2FA_REQUIRED turns it on; then the console
asks the demo admin to enrol an authenticator at the first sign-in."""

import os
import secrets

from axes.utils import reset as sign_in_failures_reset
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

DEMO_ADMIN_EMAIL = "admin@example.com"
DEFAULT_ADMIN_URL = "http://127.0.0.1:8000/admin/"


class Command(BaseCommand):
    help = (
        f"Create the superuser {DEMO_ADMIN_EMAIL}, or reset its password, and print the login. "
        "The password comes from DEMO_ADMIN_PASSWORD, else a random one. Refuses to run with DEBUG off."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default=DEFAULT_ADMIN_URL, help="Admin console URL to print with the login.")

    def handle(self, *args, url, **options):
        # A known admin login must never appear on a production database.
        if not settings.DEBUG:
            raise CommandError("ensure_demo_admin only runs with DEBUG on: it creates a superuser with a known login.")
        password = os.environ.get("DEMO_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        with transaction.atomic():
            admin, created = get_user_model().objects.get_or_create(
                username=DEMO_ADMIN_EMAIL, defaults={"email": DEMO_ADMIN_EMAIL}
            )
            admin.email = DEMO_ADMIN_EMAIL
            admin.is_active = admin.is_staff = admin.is_superuser = True
            admin.set_password(password)
            admin.save()
            # A new password starts with a clean slate: a development machine's lockouts are lifted.
            sign_in_failures_reset()
        second_factor = "asked for at the first sign-in" if settings.STAFF_2FA_REQUIRED else "off (STAFF_2FA_REQUIRED)"
        self.stdout.write(self.style.SUCCESS("Demo admin created." if created else "Demo admin password reset."))
        self.stdout.write(
            f"  URL:      {url}\n  E-mail:   {DEMO_ADMIN_EMAIL}\n  Password: {password}\n  2FA:      {second_factor}"
        )
