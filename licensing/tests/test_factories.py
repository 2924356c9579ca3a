import pytest
from django.apps import apps

from billing_project.tests.factories import model_factories
from licensing.tests import factories

FACTORIES = model_factories(factories)


def test_factories_cover_every_model_of_the_app():
    assert set(apps.get_app_config("licensing").get_models()) <= {factory._meta.model for factory in FACTORIES}


@pytest.mark.django_db
@pytest.mark.parametrize("factory_class", FACTORIES, ids=lambda factory_class: factory_class.__name__)
def test_factory_creates_a_valid_row(factory_class):
    row = factory_class()

    row.full_clean()
    assert type(row).objects.filter(pk=row.pk).exists()
