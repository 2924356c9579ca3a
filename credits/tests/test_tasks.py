"""The periodic credit jobs, run as Celery runs them (eagerly here), and their schedule."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from credits import tasks
from credits.models import CreditHold, TokenUsageDailySummary, UserCreditBalance
from credits.tests.conftest import fund, usage_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]


def test_every_credit_job_is_on_the_beat_schedule():
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    assert {
        "credits.tasks.expire_credit_holds",
        "credits.tasks.expire_credits",
        "credits.tasks.rollup_usage_daily",
    } <= scheduled


def test_expiry_tasks_expire_grants_and_holds_and_are_idempotent(service_client, user):
    fund(user, 100, expires_at=timezone.now() + timedelta(minutes=1))
    fund(user, 10)
    service_client.post("/api/v1/usage/reserve/", {"user_id": user.pk, "estimated_credits": 5}, format="json")

    with time_machine.travel(timezone.now() + settings.CREDIT_HOLD_TTL + timedelta(minutes=1)):
        first = (tasks.expire_credits.delay().get(), tasks.expire_credit_holds.delay().get())
        again = (tasks.expire_credits.delay().get(), tasks.expire_credit_holds.delay().get())

    assert first == (1, 1)
    assert again == (0, 0)
    assert UserCreditBalance.objects.get(user=user).amount == 10
    assert CreditHold.objects.get().status == "expired"


def test_nightly_rollup_summarises_today_and_yesterday(service_client, user):
    fund(user, 1000)
    service_client.post("/api/v1/usage/record/", usage_event(user), format="json")

    tasks.rollup_usage_daily.delay().get()
    tasks.rollup_usage_daily.delay().get()

    summary = TokenUsageDailySummary.objects.get()
    assert (summary.summary_date, summary.total_credits_deducted) == (timezone.now().date(), 70)
