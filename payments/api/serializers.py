from rest_framework import serializers

from payments.models import PaymentEvent, PaymentOperation, WebhookEvent


class PaymentEventOutput(serializers.ModelSerializer):
    class Meta:
        model = PaymentEvent
        fields = [
            "id",
            "user",
            "event_type",
            "plan_code",
            "customer_id",
            "invoice_id",
            "subscription_id",
            "amount",
            "currency",
            "metadata",
            "webhook_event",
            "created_at",
        ]


class PaymentOperationOutput(serializers.ModelSerializer):
    amount = serializers.IntegerField(help_text="In the currency's minor units (cents).")

    class Meta:
        model = PaymentOperation
        fields = [
            "id",
            "kind",
            "state",
            "effect",
            "cleanup_due",
            "provider",
            "user",
            "subject_type",
            "subject_id",
            "amount",
            "currency",
            "description",
            "stripe_customer_id",
            "stripe_checkout_session_id",
            "stripe_invoice_id",
            "stripe_payment_intent_id",
            "stripe_refund_id",
            "attempts",
            "last_error",
            "created_at",
            "submitted_at",
            "settled_at",
            "updated_at",
        ]


class CheckoutOutput(serializers.Serializer):
    url = serializers.URLField(allow_null=True, help_text="Where the customer pays; null when already paid.")
    session_id = serializers.CharField()
    completed = serializers.BooleanField()
    operation_id = serializers.UUIDField(help_text="The payment operation recording this checkout.")


class OperationStateOutput(serializers.ModelSerializer):
    """How a client sees the payment behind its request: `submitted` while an asynchronous payment
    is in flight (the change it pays for is applied when it succeeds)."""

    amount = serializers.IntegerField(help_text="In the currency's minor units (cents).")

    class Meta:
        model = PaymentOperation
        fields = ["id", "kind", "state", "amount", "currency", "last_error"]


class WebhookOutput(serializers.Serializer):
    event_id = serializers.CharField()
    event_type = serializers.CharField()
    status = serializers.CharField()
    result = serializers.JSONField(allow_null=True)
    replayed = serializers.BooleanField()


class PortalSessionOutput(serializers.Serializer):
    url = serializers.URLField(help_text="Where to send the customer: Stripe's portal, or a local page offline.")
    provider = serializers.CharField(help_text="stripe, or offline (development: no portal).")


class OfflinePortalOutput(serializers.Serializer):
    provider = serializers.CharField()
    detail = serializers.CharField()


class UnmatchedWebhookEventOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookEvent
        fields = [
            "event_id",
            "event_type",
            "object_id",
            "status",
            "unmatched_reason",
            "error",
            "result",
            "attempts",
            "event_created_at",
            "received_at",
            "processed_at",
        ]
