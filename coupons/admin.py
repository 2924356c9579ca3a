"""Coupons and campaigns are never hard-deleted from the console: deleting is a soft delete (a service),
and redemption history must survive. Redemptions, usage totals and snapshots are read-only."""

from django.contrib import admin

from audit.admin_base import AuditedModelAdmin, CreatorStampAdminMixin, ReadOnlyHistoryAdmin, ReadOnlyModelAdmin
from coupons.models import (
    CampaignCoupon,
    Coupon,
    CouponAnalyticsSnapshot,
    CouponCampaign,
    CouponFraudDetection,
    CouponRedemption,
    CouponUsageLimit,
    CouponValidationRule,
)


@admin.register(CouponCampaign)
class CouponCampaignAdmin(CreatorStampAdminMixin, AuditedModelAdmin):
    list_display = ("name", "starts_at", "ends_at", "budget_usd", "spent_usd", "is_active", "created_by")
    list_filter = ("is_active",)
    list_select_related = ("created_by",)
    search_fields = ("name", "description")
    date_hierarchy = "starts_at"
    readonly_fields = ("spent_usd", "created_by", "created_at", "updated_at")

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Coupon)
class CouponAdmin(CreatorStampAdminMixin, AuditedModelAdmin):
    list_display = (
        "code",
        "coupon_type",
        "discount_type",
        "discount_value",
        "valid_from",
        "valid_until",
        "max_uses",
        "max_uses_per_user",
        "is_active",
        "is_deleted",
    )
    list_filter = (
        "coupon_type",
        "discount_type",
        "is_active",
        ("deleted_at", admin.EmptyFieldListFilter),
        "new_customers_only",
    )
    search_fields = ("code", "description")
    date_hierarchy = "created_at"
    readonly_fields = ("created_by", "deleted_at", "deleted_by", "created_at", "updated_at")

    @admin.display(boolean=True, description="deleted", ordering="deleted_at")
    def is_deleted(self, obj):
        return obj.deleted_at is not None

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(CampaignCoupon)
class CampaignCouponAdmin(AuditedModelAdmin):
    list_display = ("coupon", "campaign", "created_at")
    list_filter = ("campaign",)
    list_select_related = ("coupon", "campaign")
    search_fields = ("coupon__code", "campaign__name")
    autocomplete_fields = ("campaign", "coupon")
    readonly_fields = ("created_at",)


@admin.register(CouponRedemption)
class CouponRedemptionAdmin(ReadOnlyHistoryAdmin):
    list_display = (
        "redemption_date",
        "coupon_code",
        "user",
        "status",
        "failure_reason",
        "original_amount_usd",
        "discount_applied_usd",
        "final_amount_usd",
        "credits_granted",
        "ip_address",
    )
    list_filter = ("status", "failure_reason")
    list_select_related = ("user",)
    search_fields = ("coupon_code", "user__email", "ip_address", "=device_fingerprint", "=id")
    date_hierarchy = "redemption_date"
    ordering = ("-redemption_date",)


@admin.register(CouponUsageLimit)
class CouponUsageLimitAdmin(ReadOnlyHistoryAdmin):
    list_display = ("coupon", "total_uses", "unique_users", "total_discount_usd", "last_used_at")
    list_select_related = ("coupon",)
    search_fields = ("coupon__code",)
    ordering = ("-last_used_at",)


@admin.register(CouponFraudDetection)
class CouponFraudDetectionAdmin(AuditedModelAdmin):
    list_display = (
        "detected_at",
        "detection_type",
        "severity",
        "coupon",
        "user",
        "ip_address",
        "is_flagged",
        "resolved_at",
        "resolved_by",
    )
    list_filter = ("detection_type", "severity", "is_flagged", ("resolved_at", admin.EmptyFieldListFilter))
    list_select_related = ("coupon", "user", "resolved_by")
    search_fields = ("user__email", "coupon__code", "ip_address", "=device_fingerprint")
    date_hierarchy = "detected_at"
    autocomplete_fields = ("coupon", "user", "resolved_by")
    raw_id_fields = ("redemption",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(CouponValidationRule)
class CouponValidationRuleAdmin(AuditedModelAdmin):
    list_display = ("coupon", "rule_type", "is_active", "updated_at")
    list_filter = ("rule_type", "is_active")
    list_select_related = ("coupon",)
    search_fields = ("coupon__code",)
    autocomplete_fields = ("coupon",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(CouponAnalyticsSnapshot)
class CouponAnalyticsSnapshotAdmin(ReadOnlyModelAdmin):
    list_display = (
        "snapshot_date",
        "coupon",
        "redemptions",
        "failed_redemptions",
        "unique_users",
        "discount_total_usd",
        "revenue_usd",
        "conversions",
    )
    list_select_related = ("coupon",)
    search_fields = ("coupon__code",)
    date_hierarchy = "snapshot_date"
    ordering = ("-snapshot_date",)
