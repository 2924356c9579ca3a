"""The one-way layering of the apps, `audit <- payments <- licensing <- credits <- subscriptions <- coupons`
(an app uses only apps to its left), checked rather than drawn: on imports by the import-linter contracts
of `.importlinter` (the composition root on top, the shared modules of billing_project below every app
but audit), and on the schema by the foreign keys of every installed model."""

import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import grimp
import pytest
from django.apps import apps
from importlinter.api import read_configuration
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"
LAYERS = ("audit", "payments", "licensing", "credits", "subscriptions", "coupons")  # lowest first


def test_the_import_contracts_are_kept():
    # `lint-imports` itself, in its own process: in this one it would reconfigure logging.
    lint_imports = Path(sys.executable).parent / "lint-imports"

    run = subprocess.run(
        [lint_imports, "--config", CONFIG, "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True
    )

    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture(scope="module")
def configuration():
    return read_configuration(str(CONFIG))


@pytest.fixture(scope="module")
def import_graph(configuration):
    return grimp.build_graph(*configuration["session_options"]["root_packages"], cache_dir=None)


def _broken_contracts(configuration, graph) -> list[str]:
    types = {"layers": LayersContract, "forbidden": ForbiddenContract}
    broken = []
    for options in configuration["contracts_options"]:
        contract = types[options["type"]](
            name=options["name"], session_options=configuration["session_options"], contract_options=options
        )
        if not contract.check(deepcopy(graph), verbose=False).kept:  # a check may drop ignored imports
            broken.append(options["id"])
    return broken


@pytest.mark.parametrize(
    ("importer", "imported", "contract"),
    [
        ("audit.services", "payments.models", "apps-layered"),
        ("credits.services.usage", "subscriptions.selectors", "apps-layered"),
        ("payments.services.inbox", "coupons.models", "apps-layered"),
        ("licensing.services", "credits.services", "apps-layered"),
        ("billing_project.money", "credits.models", "shared-modules"),
        ("billing_project.errors", "subscriptions.models", "shared-modules"),
    ],
)
def test_an_import_against_the_layering_breaks_its_contract(configuration, import_graph, importer, imported, contract):
    graph = deepcopy(import_graph)
    graph.add_import(importer=importer, imported=imported)

    assert contract in _broken_contracts(configuration, graph)  # the other may break too, through a chain


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("coupons.services.redemption", "audit.models"),
        ("subscriptions.services.lifecycle", "licensing.models"),
        ("billing_project.dashboard", "coupons.selectors.reports"),
        ("billing_project.urls", "licensing.api.views"),
        ("audit.services", "billing_project.money"),
    ],
)
def test_an_import_along_the_layering_breaks_nothing(configuration, import_graph, importer, imported):
    graph = deepcopy(import_graph)
    graph.add_import(importer=importer, imported=imported)

    assert _broken_contracts(configuration, graph) == []


def _layer(app_label: str) -> int:
    """billing_project, django's own apps and third-party apps are below every app (-1)."""
    return LAYERS.index(app_label) if app_label in LAYERS else -1


def _foreign_keys():
    for model in apps.get_models():
        for field in model._meta.get_fields():
            if (
                field.is_relation and not field.auto_created and field.related_model is not None
            ):  # not reverse, not generic
                yield model, field


def test_no_foreign_key_points_from_an_app_to_one_above_it():
    upward = {
        f"{model._meta.label}.{field.name} -> {field.related_model._meta.label}"
        for model, field in _foreign_keys()
        if _layer(field.related_model._meta.app_label) > _layer(model._meta.app_label)
    }

    assert upward == set()


def test_the_foreign_key_check_sees_every_project_app():
    apps_with_keys = {model._meta.app_label for model, _ in _foreign_keys()}

    assert set(LAYERS) | {"billing_project"} <= apps_with_keys
