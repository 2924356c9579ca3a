from rest_framework import serializers

MONEY = {"max_digits": 12, "decimal_places": 2}


class AutoRechargeInput(serializers.Serializer):
    enabled = serializers.BooleanField()
    threshold = serializers.IntegerField(
        min_value=0, max_value=1_000_000_000, help_text="Credits: a recharge is due below this balance."
    )
    pack = serializers.UUIDField(help_text="The credit pack each recharge buys.")
    monthly_cap = serializers.DecimalField(
        **MONEY, min_value=0, help_text="Most money charged per calendar month (UTC), in the pack's currency."
    )


class AutoRechargePackOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    credits = serializers.IntegerField()
    price = serializers.DecimalField(**MONEY)
    currency = serializers.CharField()
    is_active = serializers.BooleanField()


class AutoRechargeOutput(serializers.Serializer):
    enabled = serializers.BooleanField()
    threshold = serializers.IntegerField(allow_null=True, help_text="Credits.")
    pack = AutoRechargePackOutput(allow_null=True)
    monthly_cap = serializers.DecimalField(**MONEY, allow_null=True, help_text="In the pack's currency.")
    charged_this_month = serializers.DecimalField(
        **MONEY, help_text="What this month's recharges charged or are charging, in the pack's currency."
    )
    consecutive_failures = serializers.IntegerField()
    paused = serializers.BooleanField()
    paused_at = serializers.DateTimeField(allow_null=True)
    pause_reason = serializers.CharField()
    updated_at = serializers.DateTimeField(allow_null=True)
