from rest_framework import serializers

from audit.models import AdminAuditLog


class AdminAuditLogOutput(serializers.ModelSerializer):
    sealed = serializers.BooleanField(
        source="is_sealed", read_only=True, help_text="In the hash chain; until then sequence and hashes are null."
    )
    prev_hash = serializers.CharField(read_only=True, allow_null=True, source="prev_hash_if_sealed")
    row_hash = serializers.CharField(read_only=True, allow_null=True, source="row_hash_if_sealed")

    class Meta:
        model = AdminAuditLog
        fields = [
            "id",
            "sealed",
            "sequence",
            "actor",
            "actor_email",
            "action",
            "resource_type",
            "resource_id",
            "endpoint",
            "method",
            "ip_address",
            "user_agent",
            "request_body",
            "previous_value",
            "new_value",
            "status_code",
            "error_message",
            "timestamp",
            "prev_hash",
            "row_hash",
        ]


class AuditChainSealOutput(serializers.Serializer):
    sealed = serializers.IntegerField(help_text="Rows this run appended to the chain.")
    head_sequence = serializers.IntegerField(help_text="The chain's last sequence number.")
    head_hash = serializers.CharField(help_text="The row hash of the chain's last row.")
