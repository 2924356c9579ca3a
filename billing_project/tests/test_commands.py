from io import StringIO

import pytest
from django.core.management import call_command

from billing_project.auth import service_token_decode


@pytest.mark.django_db
def test_issue_service_token_prints_a_valid_token_on_its_last_line():
    out = StringIO()

    call_command("issue_service_token", "--service", "llm-gateway", "--scope", "usage:write", stdout=out)

    token = out.getvalue().strip().splitlines()[-1]
    principal = service_token_decode(token)
    assert principal.name == "llm-gateway"
    assert principal.scopes == frozenset({"usage:write"})


@pytest.mark.django_db
def test_issue_service_token_refuses_a_non_positive_lifetime():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("issue_service_token", "--service", "x", "--scope", "a", "--days", "0", stdout=StringIO())
