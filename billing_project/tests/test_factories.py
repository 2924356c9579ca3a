"""Every model of every app has a factory, and each factory writes a row the database accepts."""

from importlib import import_module

import pytest
from django.apps import apps

from billing_project.tests.factories import model_factories

APPS = ("billing_project", "audit", "licensing", "credits", "subscriptions", "coupons")
FACTORIES = {app: model_factories(import_module(f"{app}.tests.factories")) for app in APPS}


@pytest.mark.parametrize("app", APPS)
def test_factories_cover_every_model_of_the_app(app):
    covered = {factory._meta.model for factory in FACTORIES[app]}

    assert set(apps.get_app_config(app).get_models()) <= covered


@pytest.mark.django_db
@pytest.mark.parametrize(
    "factory_class",
    [factory for factories in FACTORIES.values() for factory in factories],
    ids=lambda factory_class: factory_class.__name__,
)
def test_factory_creates_a_valid_row(factory_class):
    row = factory_class()

    row.full_clean()
    assert type(row).objects.filter(pk=row.pk).exists()
