"""Periodic jobs kept in the database (django-celery-beat), so staff edit them in the console and see
each one's last run and result (django-celery-results).

The code's schedule (settings.CELERY_BEAT_SCHEDULE) stays the default: a job missing from the
database is created from it, and a job already there is left as staff made it. Deleting a job's row
brings back the code's version at the next `seed_schedules` or beat start.
"""

import os

from celery import current_app
from celery.beat import PersistentScheduler
from django.conf import settings
from django.db import transaction
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry


def _missing(mapping: dict) -> dict:
    existing = set(PeriodicTask.objects.filter(name__in=list(mapping)).values_list("name", flat=True))
    return {name: entry for name, entry in mapping.items() if name not in existing}


@transaction.atomic
def schedules_seed() -> list[str]:
    """Creates the code's jobs that the database lacks; returns their names. Idempotent."""
    created = []
    for name, entry in _missing(settings.CELERY_BEAT_SCHEDULE).items():
        ModelEntry.from_entry(name, app=current_app, **entry)
        created.append(name)
    return created


class CodeDefaultsDatabaseScheduler(DatabaseScheduler):
    """django-celery-beat's scheduler, except that at start it only adds the code's missing jobs:
    the stock one writes the code's schedule over every job named in it, undoing staff edits."""

    def update_from_dict(self, mapping):
        super().update_from_dict(_missing(mapping))


class FileScheduler(PersistentScheduler):
    """Celery's file-backed scheduler with its state file under RUNTIME_DIR (created if missing),
    never in the checkout; reads the code's schedule only."""

    def __init__(self, *args, **kwargs):
        os.makedirs(os.path.dirname(kwargs["schedule_filename"]), exist_ok=True)
        super().__init__(*args, **kwargs)
