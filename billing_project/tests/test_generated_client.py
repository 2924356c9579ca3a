"""A client generated from /api/schema/ by a well-known generator (openapi-python-client) works against
the running API: register -> token -> me/credits, answers and problems parsed as the document says."""

import importlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model

from credits.models import UserCreditBalance
from subscriptions.services import tier_catalog_seed

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "billing_api_client"
EMAIL = "ada@example.com"
PASSWORD = "a long passphrase 42"


@pytest.fixture
def generated_client(live_server, tmp_path, monkeypatch):
    """The client package generated, in a temporary directory, from the schema the live server serves."""
    schema = httpx.get(
        f"{live_server.url}/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}, timeout=120
    )
    assert schema.status_code == 200
    (tmp_path / "openapi.json").write_bytes(schema.content)
    (tmp_path / "config.yaml").write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n")
    generated = subprocess.run(
        [
            GENERATOR,
            "generate",
            "--path",
            tmp_path / "openapi.json",
            "--config",
            tmp_path / "config.yaml",
            "--meta",
            "none",
            "--output-path",
            tmp_path / PACKAGE,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "Warning" not in generated.stdout + generated.stderr, generated.stdout + generated.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module(PACKAGE)
    for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


@pytest.mark.django_db(transaction=True)
def test_a_generated_client_registers_signs_in_and_reads_its_credits(live_server, generated_client):
    register = importlib.import_module(f"{PACKAGE}.api.auth.v1_auth_register_create")
    token = importlib.import_module(f"{PACKAGE}.api.auth.v1_auth_token_create")
    me_credits = importlib.import_module(f"{PACKAGE}.api.credits_and_usage.v1_me_credits_retrieve")
    models = importlib.import_module(f"{PACKAGE}.models")
    tier_catalog_seed()  # a transactional test starts from an empty database
    client = generated_client.Client(base_url=live_server.url, raise_on_unexpected_status=True)

    # register
    registered = register.sync_detailed(
        client=client, body=models.RegisterInputRequest(email=EMAIL, password=PASSWORD), idempotency_key="signup-1"
    )
    assert registered.status_code == 201
    user = get_user_model().objects.get(email=EMAIL)
    assert (registered.parsed.id, registered.parsed.email) == (user.pk, EMAIL)

    # the same address again: the documented 400 problem, parsed into the Problem model
    duplicate = register.sync_detailed(client=client, body=models.RegisterInputRequest(email=EMAIL, password=PASSWORD))
    assert duplicate.status_code == 400
    assert isinstance(duplicate.parsed, models.Problem)
    assert duplicate.parsed.code == "validation_error"
    assert "email" in duplicate.parsed.errors.additional_properties

    # token
    pair = token.sync(client=client, body=models.TokenObtainInputRequest(email=EMAIL, password=PASSWORD))
    assert isinstance(pair, models.TokenPair)

    # me/credits, signed in, then without a token
    signed_in = generated_client.AuthenticatedClient(
        base_url=live_server.url, token=pair.access, raise_on_unexpected_status=True
    )
    credits = me_credits.sync(client=signed_in)
    assert isinstance(credits, models.CreditsOutput)
    assert credits.balance == UserCreditBalance.objects.get(user=user).amount == 2000
    assert [(grant.source.value, grant.remaining) for grant in credits.grants] == [("subscription", 2000)]
    anonymous = me_credits.sync_detailed(client=client)
    assert anonymous.status_code == 401
    assert anonymous.parsed.code == "not_authenticated"
