"""Arguments shared by the management commands. A date that does not exist (2026-13-01) or a user
that does not exist is a CommandError: one line on stderr and exit status 1, never a traceback and
never a silent success about nobody."""

from datetime import UTC, date, datetime, time

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime


def day_parse(text: str, *, option: str) -> date:
    """A YYYY-MM-DD day."""
    try:
        day = parse_date(text)
    except ValueError:  # well-formed but impossible, such as 2026-13-01 or 2026-02-30
        day = None
    if day is None:
        raise CommandError(f"{option} '{text}' is not a date (YYYY-MM-DD).")
    return day


def moment_parse(text: str, *, option: str) -> datetime:
    """An ISO date-time, or a date (its midnight); a naive one is UTC."""
    try:
        moment = parse_datetime(text)
        if moment is None and (day := parse_date(text)) is not None:
            moment = datetime.combine(day, time.min)
    except ValueError:  # well-formed but impossible
        moment = None
    if moment is None:
        raise CommandError(f"{option} '{text}' is not an ISO date-time or date.")
    return moment.replace(tzinfo=UTC) if timezone.is_naive(moment) else moment


def user_get(reference: str, *, option: str = "--user"):
    """The user with this id, or this e-mail address (any case)."""
    users = get_user_model()._default_manager
    reference = reference.strip()
    user = users.filter(pk=int(reference)).first() if reference.isdigit() else None
    if user is None and not reference.isdigit():
        user = users.filter(email__iexact=reference).first()
    if user is None:
        raise CommandError(f"{option}: no user '{reference}'.")
    return user
