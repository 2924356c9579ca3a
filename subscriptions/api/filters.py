import django_filters

from billing_project.enums import BillingCycle, SubscriptionTier
from billing_project.filters import UserIdFilter
from subscriptions.models import Subscription, SubscriptionStatus


class StaffSubscriptionFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=SubscriptionStatus.choices)
    tier = django_filters.ChoiceFilter(choices=SubscriptionTier.choices)
    billing_cycle = django_filters.ChoiceFilter(choices=BillingCycle.choices)
    user = UserIdFilter(field_name="user_id")
    email = django_filters.CharFilter(field_name="user__email", lookup_expr="iexact")
    cancel_at_period_end = django_filters.BooleanFilter()

    class Meta:
        model = Subscription
        fields = ["status", "tier", "billing_cycle", "user", "email", "cancel_at_period_end"]
