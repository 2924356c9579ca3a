"""Payments takes over WebhookEvent (from subscriptions) and PaymentEvent (from audit) with their
tables and rows: this migration only records them in payments' state; the next one renames the
tables. Nothing is copied, so every existing row stays as it was."""

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("audit", "0002_append_only_triggers"),
        ("subscriptions", "0004_payment_completed_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="WebhookEvent",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "provider",
                            models.CharField(
                                choices=[("stripe", "Stripe"), ("offline", "Offline")], default="stripe", max_length=16
                            ),
                        ),
                        ("event_id", models.CharField(max_length=255)),
                        ("event_type", models.CharField(max_length=100)),
                        ("payload", models.JSONField()),
                        (
                            "event_created_at",
                            models.DateTimeField(blank=True, help_text="When the provider created the event.", null=True),
                        ),
                        ("received_at", models.DateTimeField(auto_now_add=True)),
                        ("processed_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("received", "Received"),
                                    ("processed", "Processed"),
                                    ("ignored", "Ignored"),
                                    ("failed", "Failed"),
                                ],
                                default="received",
                                max_length=16,
                            ),
                        ),
                        ("result", models.JSONField(blank=True, null=True)),
                        ("error", models.TextField(blank=True)),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                    ],
                    options={
                        "db_table": "subscriptions_webhookevent",
                        "indexes": [
                            models.Index(fields=["status", "received_at"], name="webhook_status_time_idx"),
                            models.Index(fields=["event_type", "received_at"], name="webhook_type_time_idx"),
                        ],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("provider__in", ["stripe", "offline"])),
                                name="subscriptions_webhookevent_provider_valid",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("status__in", ["received", "processed", "ignored", "failed"])),
                                name="subscriptions_webhookevent_status_valid",
                            ),
                            models.UniqueConstraint(
                                fields=("provider", "event_id"), name="webhook_event_unique_per_provider"
                            ),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="PaymentEvent",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "event_type",
                            models.CharField(help_text="e.g. checkout_completed, invoice_paid", max_length=64),
                        ),
                        ("plan_code", models.CharField(blank=True, max_length=32)),
                        ("customer_id", models.CharField(blank=True, max_length=255)),
                        ("invoice_id", models.CharField(blank=True, max_length=255)),
                        ("subscription_id", models.CharField(blank=True, max_length=255)),
                        (
                            "amount",
                            models.BigIntegerField(
                                blank=True, help_text="Integer cents, as the provider reports it.", null=True
                            ),
                        ),
                        ("currency", models.CharField(blank=True, max_length=3)),
                        ("metadata", models.JSONField(blank=True, default=dict)),
                        (
                            "user",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="payment_events",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "webhook_event",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="payment_events",
                                to="payments.webhookevent",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "audit_paymentevent",
                        "ordering": ["-created_at"],
                        "indexes": [
                            models.Index(fields=["user", "created_at"], name="payment_event_user_time_idx"),
                            models.Index(fields=["event_type", "created_at"], name="payment_event_type_time_idx"),
                            models.Index(fields=["created_at"], name="payment_event_time_idx"),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
