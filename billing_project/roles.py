"""Staff roles: which Django permissions each group holds, and the permissions of special actions.

`is_staff` only opens the door to the console and the staff API; what a staff member may read or do
comes from these permissions (reads need `view`, writes `add`/`change`/`delete`, special actions
their own). The groups are created from this table by a data migration and stay editable in the
console afterwards: changing the table means adding a data migration that calls `roles_sync` again
(it adds what is missing and never takes a permission away that staff gave in the console).

A permission is written `app_label.codename`. Every table below names a model as `app_label.model`
with the actions its role holds on it: `view`, `add`, `change`, `delete` (Django's own) or the
codename of one of the special permissions in SPECIAL_PERMISSIONS.
"""

from collections.abc import Iterable

VIEW, ADD, CHANGE, DELETE = "view", "add", "change", "delete"
MODEL_ACTIONS = (VIEW, ADD, CHANGE, DELETE)

WEBHOOK_EVENT_MODEL = "payments.webhookevent"
PAYMENT_EVENT_MODEL = "payments.paymentevent"

VIEW_FULL_LICENSE_KEY = "view_full_license_key"
# Held by staff allowed to read license keys whole; anyone else sees them masked.
FULL_LICENSE_KEY_PERMISSION = f"licensing.{VIEW_FULL_LICENSE_KEY}"

# Special actions, each its own permission: model -> {codename: name}.
SPECIAL_PERMISSIONS = {
    "auth.user": {"export_user": "Can export a user's personal data (GDPR)"},
    "credits.creditallocation": {"grant_credits": "Can grant credits"},
    "credits.creditdeductionledger": {"reverse_deduction": "Can reverse a deduction"},
    "credits.pricingconfig": {"approve_pricingconfig": "Can approve or reject a pricing change"},
    "licensing.perpetuallicense": {VIEW_FULL_LICENSE_KEY: "Can see license keys in full"},
    "billing_project.servicetoken": {"revoke_servicetoken": "Can revoke a service token"},
    "subscriptions.paymenttransaction": {"refund_payment": "Can refund a payment"},
}

# Customer help: reads everything a customer asks about (license keys masked), and frees or
# suspends a license. No money moves, no prices, no personal-data exports.
SUPPORT = {
    "auth.user": (VIEW,),
    "billing_project.verifiedemail": (VIEW,),
    "auditlog.logentry": (VIEW,),
    "subscriptions.tierconfig": (VIEW,),
    "subscriptions.subscription": (VIEW,),
    "subscriptions.billinginvoice": (VIEW,),
    "subscriptions.paymenttransaction": (VIEW,),
    "subscriptions.dunningattempt": (VIEW,),
    "subscriptions.userentitlement": (VIEW,),
    "subscriptions.prorationevent": (VIEW,),
    "payments.paymentoperation": (VIEW,),
    "payments.payment": (VIEW,),
    "licensing.perpetuallicense": (VIEW, CHANGE),
    "licensing.licenseactivation": (VIEW, CHANGE),
    "licensing.versionupgrade": (VIEW,),
    "coupons.coupon": (VIEW,),
    "coupons.couponcampaign": (VIEW,),
    "coupons.campaigncoupon": (VIEW,),
    "coupons.couponredemption": (VIEW,),
    "coupons.couponusagelimit": (VIEW,),
    "coupons.couponfrauddetection": (VIEW,),
    "coupons.couponvalidationrule": (VIEW,),
    "credits.provider": (VIEW,),
    "credits.modelproviderpricing": (VIEW,),
    "credits.usercreditbalance": (VIEW,),
    "credits.usercreditsource": (VIEW,),
    "credits.creditallocation": (VIEW,),
    "credits.creditdeductionledger": (VIEW,),
    "credits.creditconsumption": (VIEW,),
    "credits.credithold": (VIEW,),
    "credits.tokenusageledger": (VIEW,),
    "credits.tokenusagedailysummary": (VIEW,),
    "credits.creditusagedailysummary": (VIEW,),
    "credits.autorecharge": (VIEW,),
    # Whether the product heard of a customer's change: the events and their deliveries (not the
    # endpoints, whose secrets and configuration are the admins').
    "billing_project.outboundevent": (VIEW,),
    "billing_project.webhookdelivery": (VIEW,),
    "credits.creditpack": (VIEW,),
}

# Money and prices: everything support holds, plus credits, subscriptions' states, invoices,
# vendor prices and margins (approving another's change), coupons and campaigns, fraud review,
# payment records and the revenue figures.
FINANCE = {
    **SUPPORT,
    "subscriptions.tierconfig": (VIEW, CHANGE),
    "subscriptions.subscription": (VIEW, CHANGE),
    "subscriptions.billinginvoice": (VIEW, CHANGE),
    "subscriptions.paymenttransaction": (VIEW, CHANGE, "refund_payment"),
    "subscriptions.dunningattempt": (VIEW, CHANGE),
    WEBHOOK_EVENT_MODEL: (VIEW, CHANGE),
    PAYMENT_EVENT_MODEL: (VIEW,),
    "payments.paymentoperation": (VIEW, CHANGE),
    "payments.stripecustomer": (VIEW,),
    "licensing.perpetuallicense": (VIEW, ADD, CHANGE),
    "coupons.coupon": MODEL_ACTIONS,
    "coupons.couponcampaign": MODEL_ACTIONS,
    "coupons.campaigncoupon": MODEL_ACTIONS,
    "coupons.couponvalidationrule": MODEL_ACTIONS,
    "coupons.couponfrauddetection": (VIEW, CHANGE),
    "coupons.couponanalyticssnapshot": (VIEW,),
    "coupons.couponcodeguess": (VIEW,),
    "credits.provider": (VIEW, ADD, CHANGE),
    "credits.modelproviderpricing": (VIEW, ADD, CHANGE),
    "credits.pricingconfig": (VIEW, ADD, CHANGE, "approve_pricingconfig"),
    "credits.marginauditlog": (VIEW,),
    "credits.creditallocation": (VIEW, "grant_credits"),
    "credits.creditdeductionledger": (VIEW, "reverse_deduction"),
    "credits.autorecharge": (VIEW, CHANGE),
    "credits.usercreditbalance": (VIEW, CHANGE),
    "credits.creditpack": (VIEW, ADD, CHANGE),
}

ALL_PERMISSIONS = "__all__"

# People and access: every permission there is (accounts, groups, exports, full license keys,
# service tokens, sessions, second factors, sign-in lockouts, the audit trail), as the
# permissions stand when the table is applied.
ROLES: dict[str, dict | str] = {
    "support": SUPPORT,
    "finance": FINANCE,
    "admin": ALL_PERMISSIONS,
}


def permission_name(model: str, action: str) -> str:
    """`app_label.codename` of `action` on `model` ("credits.pricingconfig", "view")."""
    app_label, model_name = model.split(".")
    codename = f"{action}_{model_name}" if action in MODEL_ACTIONS else action
    return f"{app_label}.{codename}"


def permissions_of(table: dict, *, apps=None) -> set[str]:
    """The table's permissions; with a migration's `apps`, those of models that exist at that point
    only (a later migration that calls `roles_sync` again adds the rest)."""
    return {
        permission_name(model, action)
        for model, actions in table.items()
        if apps is None or _model_exists(apps, model)
        for action in actions
    }


def _model_exists(apps, model: str) -> bool:
    try:
        apps.get_model(model)
    except LookupError:
        return False
    return True


def _special_permissions_ensure(apps) -> None:
    content_type_model = apps.get_model("contenttypes", "ContentType")
    permission_model = apps.get_model("auth", "Permission")
    for model, permissions in SPECIAL_PERMISSIONS.items():
        if not _model_exists(apps, model):
            continue
        app_label, model_name = model.split(".")
        content_type, _ = content_type_model.objects.get_or_create(app_label=app_label, model=model_name)
        for codename, name in permissions.items():
            permission_model.objects.get_or_create(
                content_type=content_type, codename=codename, defaults={"name": name}
            )


def _model_permissions_ensure(apps) -> None:
    """Django creates model permissions only after all migrations ran (post_migrate): on a fresh
    database the roles need them earlier."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        # The migration state's app configs carry no models module, and create_permissions skips
        # an app without one; the state's models are what it reads.
        models_module = getattr(app_config, "models_module", None)
        app_config.models_module = True
        try:
            create_permissions(app_config, apps=apps, verbosity=0)
        finally:
            app_config.models_module = models_module


def _permission_rows(apps, names: Iterable[str]) -> list:
    permission_model = apps.get_model("auth", "Permission")
    wanted = set(names)
    rows = [
        row
        for row in permission_model.objects.select_related("content_type").filter(
            codename__in={name.split(".", 1)[1] for name in wanted}
        )
        if f"{row.content_type.app_label}.{row.codename}" in wanted
    ]
    missing = wanted - {f"{row.content_type.app_label}.{row.codename}" for row in rows}
    if missing:
        raise LookupError(f"The role table names permissions that do not exist: {', '.join(sorted(missing))}")
    return rows


def roles_sync(*, apps) -> None:
    """Creates the special permissions and the role groups, and adds each group the permissions of
    its table. Idempotent; takes nothing away. `apps` is a migration's app registry, or
    `django.apps.apps`."""
    _model_permissions_ensure(apps)
    _special_permissions_ensure(apps)
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for role, table in ROLES.items():
        group, _ = group_model.objects.get_or_create(name=role)
        if table == ALL_PERMISSIONS:
            rows = list(permission_model.objects.all())
        else:
            rows = _permission_rows(apps, permissions_of(table, apps=apps))
        group.permissions.add(*rows)
