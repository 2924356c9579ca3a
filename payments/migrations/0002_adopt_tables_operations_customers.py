"""The moved tables take payments' names (rows, indexes and the append-only trigger stay), their
content types follow (so permissions and object history stay attached), and the new tables:
payment operations and the one Stripe customer per user, seeded from the subscriptions that knew it."""

import django.db.models.deletion
import uuid
from django.conf import settings
from django.db import migrations, models

MOVED = (("subscriptions", "webhookevent"), ("audit", "paymentevent"))


def content_types_follow(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for app_label, model in MOVED:
        if not ContentType.objects.filter(app_label="payments", model=model).exists():
            ContentType.objects.filter(app_label=app_label, model=model).update(app_label="payments")


def content_types_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for app_label, model in MOVED:
        ContentType.objects.filter(app_label="payments", model=model).update(app_label=app_label)


def trigger_rename(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TRIGGER audit_paymentevent_append_only ON payments_paymentevent "
            "RENAME TO payments_paymentevent_append_only"
        )


def trigger_rename_back(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TRIGGER payments_paymentevent_append_only ON payments_paymentevent "
            "RENAME TO audit_paymentevent_append_only"
        )


def customers_from_subscriptions(apps, schema_editor):
    """A user's newest subscription that names a Stripe customer gives the user's customer."""
    Subscription = apps.get_model("subscriptions", "Subscription")
    StripeCustomer = apps.get_model("payments", "StripeCustomer")
    known = (
        Subscription.objects.exclude(stripe_customer_id__isnull=True)
        .exclude(stripe_customer_id="")
        .order_by("user_id", "-created_at")
        .values_list("user_id", "stripe_customer_id")
    )
    seen_users, seen_customers = set(), set()
    for user_id, customer_id in known.iterator():
        if user_id in seen_users or customer_id in seen_customers:
            continue
        seen_users.add(user_id)
        seen_customers.add(customer_id)
        StripeCustomer.objects.create(user_id=user_id, stripe_customer_id=customer_id)


class Migration(migrations.Migration):

    dependencies = [
        ('payments', '0001_initial'),
        ('audit', '0004_payment_event_moved_to_payments'),
        ('subscriptions', '0005_webhook_event_moved_to_payments'),
        ('contenttypes', '0002_remove_content_type_name'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='PaymentOperation',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('kind', models.CharField(choices=[('subscription_checkout', 'Subscription Checkout'), ('license_checkout', 'License Checkout'), ('license_upgrade_checkout', 'License Upgrade Checkout'), ('upgrade_charge', 'Upgrade Charge'), ('renewal_charge', 'Renewal Charge'), ('dunning_retry', 'Dunning Retry'), ('refund', 'Refund'), ('subscription_sync', 'Subscription Sync')], max_length=32)),
                ('state', models.CharField(choices=[('pending', 'Pending (nothing asked of the provider yet, or asked without an answer)'), ('submitted', 'Submitted (the provider has it; waiting for the money or its answer)'), ('succeeded', 'Succeeded (money moved and its effect applied)'), ('failed', 'Failed (no money moved, or it was returned)'), ('needs_attention', 'Needs attention (could not be settled automatically)')], default='pending', max_length=16)),
                ('provider', models.CharField(choices=[('stripe', 'Stripe'), ('offline', 'Offline')], max_length=16)),
                ('subject_type', models.CharField(help_text='What the operation is about, e.g. subscriptions.subscription.', max_length=64)),
                ('subject_id', models.CharField(max_length=64)),
                ('natural_key', models.CharField(help_text='Opening the same operation twice finds this row instead.', max_length=200, unique=True)),
                ('amount', models.BigIntegerField(default=0, help_text="In the currency's minor units (cents).")),
                ('currency', models.CharField(default='usd', max_length=3)),
                ('description', models.CharField(blank=True, max_length=255)),
                ('params', models.JSONField(blank=True, default=dict, help_text='What the provider steps and the effect need.')),
                ('stripe_customer_id', models.CharField(blank=True, max_length=255)),
                ('stripe_checkout_session_id', models.CharField(blank=True, max_length=255)),
                ('stripe_invoice_id', models.CharField(blank=True, max_length=255)),
                ('stripe_payment_intent_id', models.CharField(blank=True, max_length=255)),
                ('stripe_refund_id', models.CharField(blank=True, max_length=255)),
                ('stripe_objects', models.JSONField(blank=True, default=dict, help_text='Other provider ids, by step.')),
                ('effect', models.CharField(blank=True, choices=[('', 'None yet'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], max_length=10)),
                ('cleanup_due', models.CharField(blank=True, choices=[('', 'Nothing'), ('void_invoice', 'Void the unpaid invoice'), ('refund', 'Refund money that arrived for an effect that no longer applies'), ('expire_checkout', 'Expire the abandoned checkout session')], max_length=20)),
                ('attempts', models.PositiveIntegerField(default=0, help_text='Runs of the provider steps so far.')),
                ('run_lease_until', models.DateTimeField(blank=True, help_text='A run of the provider steps is under way until then (one at a time).', null=True)),
                ('last_error', models.TextField(blank=True)),
                ('result', models.JSONField(blank=True, help_text='What the effect returned.', null=True)),
                ('submitted_at', models.DateTimeField(blank=True, null=True)),
                ('settled_at', models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name='StripeCustomer',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('stripe_customer_id', models.CharField(max_length=255, unique=True)),
            ],
            options={
                'abstract': False,
            },
        ),
        migrations.RemoveConstraint(
            model_name='webhookevent',
            name='subscriptions_webhookevent_provider_valid',
        ),
        migrations.RemoveConstraint(
            model_name='webhookevent',
            name='subscriptions_webhookevent_status_valid',
        ),
        migrations.AddField(
            model_name='webhookevent',
            name='raw_body',
            field=models.TextField(blank=True, help_text='The signed body exactly as delivered.'),
        ),
        migrations.AddConstraint(
            model_name='webhookevent',
            constraint=models.CheckConstraint(condition=models.Q(('provider__in', ['stripe', 'offline'])), name='payments_webhookevent_provider_valid'),
        ),
        migrations.AddConstraint(
            model_name='webhookevent',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['received', 'processed', 'ignored', 'failed'])), name='payments_webhookevent_status_valid'),
        ),
        migrations.AlterModelTable(
            name='paymentevent',
            table=None,
        ),
        migrations.AlterModelTable(
            name='webhookevent',
            table=None,
        ),
        migrations.AddField(
            model_name='paymentoperation',
            name='user',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='payment_operations', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='stripecustomer',
            name='user',
            field=models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='stripe_customer', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddIndex(
            model_name='paymentoperation',
            index=models.Index(fields=['state', 'updated_at'], name='payment_op_state_idx'),
        ),
        migrations.AddIndex(
            model_name='paymentoperation',
            index=models.Index(fields=['subject_type', 'subject_id', 'state'], name='payment_op_subject_idx'),
        ),
        migrations.AddIndex(
            model_name='paymentoperation',
            index=models.Index(fields=['user', 'created_at'], name='payment_op_user_time_idx'),
        ),
        migrations.AddIndex(
            model_name='paymentoperation',
            index=models.Index(fields=['stripe_invoice_id'], name='payment_op_invoice_idx'),
        ),
        migrations.AddIndex(
            model_name='paymentoperation',
            index=models.Index(fields=['stripe_checkout_session_id'], name='payment_op_session_idx'),
        ),
        migrations.AddConstraint(
            model_name='paymentoperation',
            constraint=models.CheckConstraint(condition=models.Q(('kind__in', ['subscription_checkout', 'license_checkout', 'license_upgrade_checkout', 'upgrade_charge', 'renewal_charge', 'dunning_retry', 'refund', 'subscription_sync'])), name='payments_paymentoperation_kind_valid'),
        ),
        migrations.AddConstraint(
            model_name='paymentoperation',
            constraint=models.CheckConstraint(condition=models.Q(('state__in', ['pending', 'submitted', 'succeeded', 'failed', 'needs_attention'])), name='payments_paymentoperation_state_valid'),
        ),
        migrations.AddConstraint(
            model_name='paymentoperation',
            constraint=models.CheckConstraint(condition=models.Q(('provider__in', ['stripe', 'offline'])), name='payments_paymentoperation_provider_valid'),
        ),
        migrations.AddConstraint(
            model_name='paymentoperation',
            constraint=models.CheckConstraint(condition=models.Q(('effect__in', ['', 'succeeded', 'failed'])), name='payments_paymentoperation_effect_valid'),
        ),
        migrations.AddConstraint(
            model_name='paymentoperation',
            constraint=models.CheckConstraint(condition=models.Q(('cleanup_due__in', ['', 'void_invoice', 'refund', 'expire_checkout'])), name='payments_paymentoperation_cleanup_due_valid'),
        ),
        migrations.AddConstraint(
            model_name='paymentoperation',
            constraint=models.CheckConstraint(condition=models.Q(('amount__gte', 0)), name='payment_operation_amount_not_negative'),
        ),
        migrations.AddConstraint(
            model_name='paymentoperation',
            constraint=models.UniqueConstraint(condition=models.Q(('state__in', ('pending', 'submitted')), ('kind__in', ('upgrade_charge', 'renewal_charge', 'dunning_retry', 'refund'))), fields=('kind', 'subject_type', 'subject_id'), name='payment_operation_one_unfinished_charge'),
        ),
        migrations.RunPython(content_types_follow, content_types_back),
        migrations.RunPython(trigger_rename, trigger_rename_back),
        migrations.RunPython(customers_from_subscriptions, migrations.RunPython.noop),
    ]
