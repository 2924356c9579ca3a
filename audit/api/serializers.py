from rest_framework import serializers

from audit.models import AdminAuditLog


class AdminAuditLogOutput(serializers.ModelSerializer):
    class Meta:
        model = AdminAuditLog
        fields = [
            "id",
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
