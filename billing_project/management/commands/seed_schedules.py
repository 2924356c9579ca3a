from django.core.management.base import BaseCommand

from billing_project.schedules import schedules_seed


class Command(BaseCommand):
    help = (
        "Adds the code's periodic jobs (CELERY_BEAT_SCHEDULE) that the database schedule lacks; jobs already "
        "there keep their console edits. Idempotent: run at every deploy, after migrate."
    )

    def handle(self, *args, **options):
        created = schedules_seed()
        names = f": {', '.join(created)}" if created else ""
        self.stdout.write(f"Added {len(created)} periodic jobs{names}.")
