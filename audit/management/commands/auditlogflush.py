"""Replaces django-auditlog's `auditlogflush`: the object history is part of the audit trail and is
never wiped, so the command refuses whatever it is asked."""

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Refuses: the object history (django-auditlog) is part of the audit trail and is never deleted."

    def add_arguments(self, parser):
        parser.add_argument("args", nargs="*")
        parser.add_argument("-y", "--yes", action="store_true")
        parser.add_argument("-b", "--before-date")
        parser.add_argument("-t", "--truncate", action="store_true")

    def handle(self, *args, **options):
        raise CommandError("auditlogflush is disabled: the object history is part of the audit trail.")
