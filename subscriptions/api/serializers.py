from rest_framework import serializers

from subscriptions.models import TierConfig


class RegisterInput(serializers.Serializer):
    email = serializers.EmailField(max_length=150)
    password = serializers.CharField(trim_whitespace=False, write_only=True, max_length=128)


class AccountOutput(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()


class MeOutput(AccountOutput):
    tier = serializers.CharField()


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
