"""Fills credits' copy of each user's tier and live subscription (credits.UserCreditBalance.tier and
subscription_id, added by credits 0006) from the entitlements and subscriptions as they are: from now on
subscriptions pushes every change (subscriptions.services.credits_tier_push). It runs here, not in
credits, so that credits' migrations need nothing of subscriptions. Users without a balance row get one."""

from django.db import migrations

# The statuses of a live subscription when this migration was written (subscriptions.models.LIVE_STATUSES).
LIVE_STATUSES = ("trial", "active", "past_due", "grace_period", "suspended")
BATCH = 1000


def tiers_push(apps, schema_editor):
    balances = apps.get_model("credits", "UserCreditBalance")
    tier_of = dict(apps.get_model("subscriptions", "UserEntitlement").objects.values_list("user_id", "tier"))
    live_subscription_of = dict(
        apps.get_model("subscriptions", "Subscription")
        .objects.filter(status__in=LIVE_STATUSES)
        .values_list("user_id", "pk")
    )
    user_ids = sorted(set(tier_of) | set(live_subscription_of))
    for start in range(0, len(user_ids), BATCH):
        chunk = user_ids[start : start + BATCH]
        existing = {balance.user_id: balance for balance in balances.objects.filter(user_id__in=chunk)}
        for user_id in chunk:
            balance = existing.get(user_id) or balances(user_id=user_id)
            balance.tier = tier_of.get(user_id, "free")
            balance.subscription_id = live_subscription_of.get(user_id)
            existing[user_id] = balance
        rows = list(existing.values())
        balances.objects.bulk_update([row for row in rows if not row._state.adding], ["tier", "subscription_id"])
        balances.objects.bulk_create([row for row in rows if row._state.adding])


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0007_invoice_stripe_documents"),
        ("credits", "0007_subscription_ids_and_tier_on_balance"),
    ]

    operations = [migrations.RunPython(tiers_push, migrations.RunPython.noop)]
