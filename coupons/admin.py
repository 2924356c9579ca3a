"""Coupons and campaigns are never hard-deleted from the console: deleting is a soft delete (a service),
and redemption history must survive. Redemptions, usage totals and snapshots are read-only."""

from django import forms
from django.contrib import admin, messages

from audit.admin_base import AuditedModelAdmin, CreatorStampAdminMixin, ReadOnlyHistoryAdmin, ReadOnlyModelAdmin
from audit.admin_export import CsvExportMixin
from billing_project.admin_actions import form_action
from billing_project.enums import BillingCycle, SubscriptionTier
from billing_project.errors import DomainError
from coupons.models import (
    SUBSCRIBABLE_TIERS,
    CampaignCoupon,
    Coupon,
    CouponAnalyticsSnapshot,
    CouponCampaign,
    CouponCodeGuess,
    CouponFraudDetection,
    CouponRedemption,
    CouponType,
    CouponUsageLimit,
    CouponValidationRule,
    DiscountType,
)
from coupons.services.campaigns import campaign_coupons_generate, coupon_activate, coupon_deactivate, coupon_delete
from coupons.services.review import fraud_detection_resolve


def _per_coupon(service, verb: str):
    """A console action calling `service` for each selected coupon; the service audits each change."""

    def action(modeladmin, request, queryset):
        done, refused = [], []
        for coupon in queryset:
            try:
                service(coupon_id=coupon.pk, actor=request.user)
                done.append(coupon.code)
            except DomainError as error:
                refused.append(f"{coupon.code}: {error.detail}")
        if done:
            modeladmin.message_user(request, f"{verb}: {', '.join(done)}", messages.SUCCESS)
        if refused:
            modeladmin.message_user(request, "Refused: " + "; ".join(refused), messages.ERROR)

    return action


@admin.action(description="Activate the selected coupons", permissions=["change"])
def activate_coupons(modeladmin, request, queryset):
    _per_coupon(coupon_activate, "Activated")(modeladmin, request, queryset)


@admin.action(description="Deactivate the selected coupons", permissions=["change"])
def deactivate_coupons(modeladmin, request, queryset):
    _per_coupon(coupon_deactivate, "Deactivated")(modeladmin, request, queryset)


@admin.action(description="Delete the selected coupons (soft: their redemptions stay)", permissions=["soft_delete"])
def soft_delete_coupons(modeladmin, request, queryset):
    _per_coupon(coupon_delete, "Deleted")(modeladmin, request, queryset)


class GenerateCodesForm(forms.Form):
    count = forms.IntegerField(min_value=1, max_value=10_000)
    prefix = forms.RegexField(regex=r"^[A-Za-z0-9-]{0,20}$", required=False)
    coupon_type = forms.ChoiceField(choices=CouponType.choices)
    discount_type = forms.ChoiceField(choices=[("", "(none: byok_migration)"), *DiscountType.choices], required=False)
    discount_value = forms.DecimalField(max_digits=12, decimal_places=2, min_value=0, initial=0)
    valid_until = forms.DateTimeField(required=False, help_text="YYYY-MM-DD HH:MM; empty for no end.")


def _generate(*, request, obj, count, prefix, valid_until, **template):
    coupons = campaign_coupons_generate(
        campaign_id=obj.pk,
        actor=request.user,
        count=count,
        prefix=prefix,
        valid_until=valid_until,
        **template,
    )
    return f"{len(coupons)} codes generated for {obj.name}"


generate_codes = form_action(
    form_class=GenerateCodesForm,
    description="Generate single-use codes for the selected campaigns",
    perform=_generate,
    name="generate_codes",
    permissions=["add"],
)


class ResolutionForm(forms.Form):
    resolution = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)


def _resolve(*, request, obj, resolution):
    fraud_detection_resolve(detection_id=obj.pk, actor=request.user, resolution=resolution)
    return f"resolved {obj}"


resolve_detections = form_action(
    form_class=ResolutionForm,
    description="Resolve the selected fraud detections",
    perform=_resolve,
    name="resolve_detections",
    permissions=["resolve"],
)


@admin.register(CouponCampaign)
class CouponCampaignAdmin(CreatorStampAdminMixin, AuditedModelAdmin):
    list_display = ("name", "starts_at", "ends_at", "budget_usd", "spent_usd", "is_active", "created_by")
    list_filter = ("is_active",)
    list_select_related = ("created_by",)
    search_fields = ("name", "description")
    date_hierarchy = "starts_at"
    readonly_fields = ("spent_usd", "created_by", "created_at", "updated_at")
    actions = [generate_codes]

    def has_delete_permission(self, request, obj=None):
        return False


# The JSON lists of tiers and billing cycles a coupon applies to, chosen from their choices.
CHOICE_LISTS = {
    "applicable_tiers": [(tier.value, tier.label) for tier in SubscriptionTier if tier in SUBSCRIBABLE_TIERS],
    "applicable_billing_cycles": BillingCycle.choices,
}


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
    actions = [activate_coupons, deactivate_coupons, soft_delete_coupons]

    @admin.display(boolean=True, description="deleted", ordering="deleted_at")
    def is_deleted(self, obj):
        return obj.deleted_at is not None

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name in CHOICE_LISTS:
            return forms.MultipleChoiceField(
                choices=CHOICE_LISTS[db_field.name],
                widget=forms.CheckboxSelectMultiple,
                required=False,
                label=db_field.verbose_name.capitalize(),
                help_text="None ticked: the coupon applies to all of them.",
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def has_soft_delete_permission(self, request):
        # Hard deletes are off (history must survive); the soft one is what "delete" means here.
        return request.user.has_perm("coupons.delete_coupon")

    def get_readonly_fields(self, request, obj=None):
        # Active or not, deleted or not: only through the audited actions, once the coupon exists.
        stamps = ("created_by", "deleted_at", "deleted_by", "created_at", "updated_at")
        return stamps if obj is None else ("is_active", *stamps)

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
class CouponRedemptionAdmin(CsvExportMixin, ReadOnlyHistoryAdmin):
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
class CouponFraudDetectionAdmin(ReadOnlyHistoryAdmin):
    """Detections come from redemptions; staff only resolve them (audited), with what they decided."""

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
    ordering = ("-detected_at",)
    actions = [resolve_detections]

    def has_resolve_permission(self, request):
        return request.user.has_perm("coupons.change_couponfrauddetection")


@admin.register(CouponValidationRule)
class CouponValidationRuleAdmin(AuditedModelAdmin):
    list_display = ("coupon", "rule_type", "is_active", "updated_at")
    list_filter = ("rule_type", "is_active")
    list_select_related = ("coupon",)
    search_fields = ("coupon__code",)
    autocomplete_fields = ("coupon",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(CouponCodeGuess)
class CouponCodeGuessAdmin(ReadOnlyModelAdmin):
    list_display = ("tried_at", "code", "channel", "user", "ip_address")
    list_filter = ("channel",)
    list_select_related = ("user",)
    search_fields = ("code", "user__email", "ip_address")
    date_hierarchy = "tried_at"


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
        "money_in_currencies",
        "conversions",
    )
    list_select_related = ("coupon",)
    search_fields = ("coupon__code",)
    date_hierarchy = "snapshot_date"
    ordering = ("-snapshot_date",)

    @admin.display(description="Discount / revenue by currency")
    def money_in_currencies(self, snapshot):
        return "; ".join(
            f"{currency.upper()} {figures['discount_total']} / {figures['revenue']}"
            for currency, figures in snapshot.money_by_currency.items()
        )
