import pytest
from django.apps import apps

from billing_project.tests.factories import model_factories
from credits.tests import factories

FACTORIES = model_factories(factories)


def test_factories_cover_every_model_of_the_app():
    assert set(apps.get_app_config("credits").get_models()) <= {factory._meta.model for factory in FACTORIES}


@pytest.mark.django_db
@pytest.mark.parametrize("factory_class", FACTORIES, ids=lambda factory_class: factory_class.__name__)
def test_factory_creates_a_valid_row(factory_class):
    row = factory_class()

    row.full_clean()
    assert type(row).objects.filter(pk=row.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("trait", ["provider_scope", "model_scope", "combination_scope", "approved"])
def test_pricing_config_traits_satisfy_the_scope_and_approver_constraints(trait):
    config = factories.PricingConfigFactory(**{trait: True})

    config.full_clean()
    assert config.approved_by_id != config.created_by_id


@pytest.mark.django_db
def test_deduction_reversal_trait_restores_the_amount():
    reversal = factories.CreditDeductionLedgerFactory(reversal=True)

    reversal.full_clean()
    assert reversal.balance_after == reversal.balance_before + reversal.amount
    assert reversal.reverses.user_id == reversal.user_id
