"""Every management command that takes a date or a user: an impossible date or an unknown user ends
in a CommandError, one line on stderr and exit status 1, with nothing written."""

from unittest import mock

import pytest
from django.core.management import ManagementUtility

from audit.models import AdminAuditLog
from coupons.models import CouponAnalyticsSnapshot
from credits.models import CreditUsageDailySummary, ModelProviderPricing, UserCreditSource

pytestmark = pytest.mark.django_db


def run_from_command_line(*args: str) -> int:
    """As `manage.py ARGS` does: the exit status, 0 when the command returns. The deploy checks are
    skipped (the test settings are not production's), and so is the closing of the database
    connections at the end, which would close the test's own transaction."""
    try:
        with mock.patch("django.core.management.base.connections.close_all"):
            ManagementUtility(["manage.py", *args, "--skip-checks"]).execute()
    except SystemExit as exit:
        return exit.code
    return 0


def nothing_written() -> bool:
    return not (
        AdminAuditLog.objects.exists()
        or UserCreditSource.objects.exists()
        or CreditUsageDailySummary.objects.exists()
        or CouponAnalyticsSnapshot.objects.exists()
        or ModelProviderPricing.objects.exists()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rollup_usage", "--from", "2026-13-01"], "--from '2026-13-01' is not a date"),
        (["rollup_usage", "--from", "2026-02-01", "--to", "2026-02-30"], "--to '2026-02-30' is not a date"),
        (["rollup_usage", "--from", "2026-02-02", "--to", "2026-02-01"], "--from 2026-02-02 is after --to 2026-02-01"),
        (["snapshot_coupon_analytics", "--from", "2026-13-01"], "--from '2026-13-01' is not a date"),
        (["snapshot_coupon_analytics", "--from", "2026-01-01", "--to", "yesterday"], "--to 'yesterday' is not a date"),
        (["import_model_pricing", "{prices}", "--effective-from", "2026-13-01"], "--effective-from '2026-13-01'"),
        (["import_model_pricing", "{prices}", "--effective-from", "2026-02-30T10:00"], "--effective-from"),
        (["grant_credits", "--user", "999999", "--amount", "5", "--reason", "x"], "--user: no user '999999'"),
        (["grant_credits", "--user", "nobody@example.com", "--amount", "5", "--reason", "x"], "no user 'nobody@"),
        (
            ["grant_credits", "--user", "{user}", "--amount", "5", "--reason", "x", "--expires-at", "2026-13-01"],
            "--expires-at '2026-13-01' is not an ISO date-time or date",
        ),
        (["verify_ledger", "--user", "999999"], "--user: no user '999999'"),
        (["verify_ledger", "--user", "nobody@example.com"], "--user: no user 'nobody@example.com'"),
    ],
    ids=[
        "rollup-impossible-month",
        "rollup-impossible-day",
        "rollup-from-after-to",
        "snapshot-impossible-month",
        "snapshot-not-a-date",
        "import-impossible-date",
        "import-impossible-date-time",
        "grant-unknown-id",
        "grant-unknown-email",
        "grant-impossible-expiry",
        "verify-ledger-unknown-id",
        "verify-ledger-unknown-email",
    ],
)
def test_an_impossible_date_or_unknown_user_is_a_command_error_with_exit_status_1(
    args, message, user, tmp_path, capsys
):
    prices = tmp_path / "prices.json"
    prices.write_text("[]")
    args = [arg.format(prices=prices, user=user.email) for arg in args]

    status = run_from_command_line(*args)

    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("CommandError: ")
    assert message in err
    assert "Traceback" not in err
    assert nothing_written()


def test_verify_ledger_of_a_known_user_by_email_checks_that_user(user, capsys):
    status = run_from_command_line("verify_ledger", "--user", user.email.upper(), "--no-progress")

    assert status == 0
    assert "Ledger consistent for 1 users." in capsys.readouterr().out
