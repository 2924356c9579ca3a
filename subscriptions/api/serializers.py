from rest_framework import serializers

from billing_project.enums import BillingCycle, SubscriptionTier
from billing_project.money import minor_to_text
from payments.api.serializers import CheckoutOutput, OperationStateOutput
from subscriptions.models import BillingInvoice, ProrationEvent, Subscription, SubscriptionStatus, TierConfig


class RegisterInput(serializers.Serializer):
    email = serializers.EmailField(max_length=150)
    password = serializers.CharField(trim_whitespace=False, write_only=True, max_length=128)


class AccountOutput(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()


class MeOutput(AccountOutput):
    tier = serializers.CharField()
    email_verified = serializers.BooleanField()


class TierOutput(serializers.ModelSerializer):
    class Meta:
        model = TierConfig
        fields = [
            "tier",
            "display_name",
            "monthly_price_usd",
            "annual_price_usd",
            "one_time_price_usd",
            "monthly_credit_allocation",
            "trial_days",
            "entitlements",
        ]


MONEY = {"max_digits": 12, "decimal_places": 2}


class SubscriptionOutput(serializers.ModelSerializer):
    class Meta:
        model = Subscription
        fields = [
            "id",
            "tier",
            "billing_cycle",
            "status",
            "base_price_usd",
            "monthly_credit_allocation",
            "current_period_start",
            "current_period_end",
            "trial_ends_at",
            "cancel_at_period_end",
            "cancelled_at",
            "grace_period_ends_at",
            "scheduled_tier",
            "created_at",
        ]


class StaffSubscriptionOutput(SubscriptionOutput):
    user_id = serializers.IntegerField()
    user_email = serializers.EmailField(source="user.email")

    class Meta(SubscriptionOutput.Meta):
        fields = [
            *SubscriptionOutput.Meta.fields,
            "user_id",
            "user_email",
            "stripe_customer_id",
            "stripe_subscription_id",
            "updated_at",
        ]


class StartInput(serializers.Serializer):
    tier = serializers.ChoiceField(choices=SubscriptionTier.choices)
    billing_cycle = serializers.ChoiceField(choices=BillingCycle.choices, default=BillingCycle.MONTHLY)
    coupon_code = serializers.CharField(
        max_length=50, required=False, default="", help_text="A discount coupon for the first period."
    )
    device_fingerprint = serializers.CharField(max_length=128, required=False, default="")


class StartOutput(serializers.Serializer):
    subscription = SubscriptionOutput(allow_null=True, help_text="Null while the checkout waits for payment.")
    checkout = CheckoutOutput(allow_null=True, help_text="Null for a trial, which needs no payment.")


class TierChangeInput(serializers.Serializer):
    tier = serializers.ChoiceField(choices=SubscriptionTier.choices)


class TierChangePreviewOutput(serializers.Serializer):
    change_type = serializers.CharField()
    unused_credit_value_usd = serializers.DecimalField(**MONEY, source="numbers.unused_credit_value_usd")
    new_tier_prorated_cost_usd = serializers.DecimalField(**MONEY, source="numbers.new_tier_prorated_cost_usd")
    net_charge_usd = serializers.DecimalField(**MONEY, source="numbers.net_charge_usd")
    credits_adjustment = serializers.IntegerField(source="numbers.credits_adjustment")
    days_remaining = serializers.IntegerField(source="numbers.days_remaining")
    days_in_cycle = serializers.IntegerField(source="numbers.days_in_cycle")
    effective_date = serializers.DateTimeField()


class ProrationEventOutput(serializers.ModelSerializer):
    class Meta:
        model = ProrationEvent
        fields = [
            "id",
            "from_tier",
            "to_tier",
            "change_type",
            "days_remaining",
            "days_in_cycle",
            "unused_credit_value_usd",
            "new_tier_prorated_cost_usd",
            "net_charge_usd",
            "credits_adjustment",
            "effective_date",
            "status",
        ]


class TierChangeOutput(serializers.Serializer):
    subscription = SubscriptionOutput()
    proration = ProrationEventOutput(help_text="`pending` while the upgrade's payment is in flight (answered 202).")
    payment = OperationStateOutput(allow_null=True, help_text="The upgrade's charge; null when nothing was charged.")


class RefundInput(serializers.Serializer):
    amount_usd = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        required=False,
        allow_null=True,
        default=None,
        help_text="Omit to refund what is left of the payment.",
    )
    reason = serializers.CharField(max_length=1000)


class CancelInput(serializers.Serializer):
    immediately = serializers.BooleanField(default=False, help_text="Staff only: end it now instead of at period end.")
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")


class StatusChangeInput(serializers.Serializer):
    status = serializers.ChoiceField(choices=SubscriptionStatus.choices)
    reason = serializers.CharField(max_length=1000)


class EntitlementsOutput(serializers.Serializer):
    tier = serializers.CharField()
    entitlements = serializers.DictField()
    activated_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)


class InvoiceOutput(serializers.ModelSerializer):
    """`*_usd` are the contract's fields, exact for a USD invoice (another currency's amount to two
    places, never converted); `*_in_currency` are exact in `currency` and `*_minor` in its minor units."""

    amount_due_minor = serializers.IntegerField(source="amount_due")
    amount_paid_minor = serializers.IntegerField(source="amount_paid")
    amount_due_in_currency = serializers.SerializerMethodField()
    amount_paid_in_currency = serializers.SerializerMethodField()

    class Meta:
        model = BillingInvoice
        fields = [
            "id",
            "status",
            "subtotal_usd",
            "discount_usd",
            "amount_due_usd",
            "amount_paid_usd",
            "amount_due_minor",
            "amount_paid_minor",
            "amount_due_in_currency",
            "amount_paid_in_currency",
            "currency",
            "period_start",
            "period_end",
            "description",
            "number",
            "hosted_invoice_url",
            "invoice_pdf",
            "paid_at",
            "created_at",
        ]

    def get_amount_due_in_currency(self, invoice: BillingInvoice) -> str:
        return minor_to_text(invoice.amount_due, invoice.currency)

    def get_amount_paid_in_currency(self, invoice: BillingInvoice) -> str:
        return minor_to_text(invoice.amount_paid, invoice.currency)
