"""The staff roles (groups support, finance, admin) and the special permissions, from
billing_project.roles. Runs after every app whose permissions the roles name."""

from django.db import migrations

from billing_project.roles import roles_sync


def apply_roles(apps, schema_editor):
    roles_sync(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("sessions", "0001_initial"),
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("token_blacklist", "0013_alter_blacklistedtoken_options_and_more"),
        ("auditlog", "0017_add_actor_email"),
        ("axes", "0010_accessattemptexpiration"),
        ("otp_totp", "0003_add_timestamps"),
        ("otp_static", "0003_add_timestamps"),
        ("billing_project", "0003_service_tokens_and_staff_sessions"),
        ("audit", "0004_payment_event_moved_to_payments"),
        ("payments", "0002_adopt_tables_operations_customers"),
        ("licensing", "0002_checkout_session_and_help_texts"),
        ("credits", "0004_drop_redundant_ledger_indexes"),
        ("subscriptions", "0006_dunning_processing"),
        ("coupons", "0002_pending_redemptions_take_a_use"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
