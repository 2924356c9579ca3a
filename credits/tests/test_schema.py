"""Credits sits below subscriptions (SPEC 0) in its schema too: no table of credits points at
subscriptions, and no migration of credits needs subscriptions except the first, which created the
ledgers' foreign keys that 0006 turned into plain ids (databases migrated before 0006 have run it)."""

from django.apps import apps
from django.db.migrations.loader import MigrationLoader


def test_no_credits_table_has_a_foreign_key_to_subscriptions():
    pointing_up = [
        f"{model.__name__}.{field.name}"
        for model in apps.get_app_config("credits").get_models()
        for field in model._meta.fields
        if field.is_relation and field.related_model._meta.app_label == "subscriptions"
    ]

    assert pointing_up == []


def test_only_the_first_credits_migration_depends_on_subscriptions():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    on_subscriptions = {
        name: [dependency for dependency in migration.dependencies if dependency[0] == "subscriptions"]
        for (app_label, name), migration in loader.disk_migrations.items()
        if app_label == "credits"
    }

    assert {name: found for name, found in on_subscriptions.items() if found} == {
        "0001_initial": [("subscriptions", "0001_initial")]
    }
