"""reconcile_stripe's schedule and its input checks (no Stripe needed)."""

from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from payments.models import WebhookEvent


def test_the_beat_schedule_runs_reconcile_stripe_daily():
    (entry,) = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "subscriptions.tasks.reconcile_stripe"
    ]
    schedule = entry["schedule"]
    assert (schedule.hour, schedule.minute, schedule.day_of_week) == ({2}, {40}, set(range(7)))


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "2026-02-30T10:00:00", "2999-01-01"])
@pytest.mark.django_db
def test_an_invalid_since_is_a_clean_command_error(since):
    with pytest.raises(CommandError, match="--since") as error:
        call_command("reconcile_stripe", "--since", since, stdout=StringIO())

    assert error.value.returncode == 1
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db
def test_reconcile_stripe_refuses_to_run_on_the_offline_provider(settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.PAYMENTS_PROVIDER = ""

    with pytest.raises(CommandError, match="offline provider"):
        call_command("reconcile_stripe", stdout=StringIO())
