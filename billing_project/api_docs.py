"""The API's words for its clients: tags, each operation's summary and description, and examples.

billing_project.schema puts them into the OpenAPI document; the problems each operation answers
are derived from the code (billing_project.problem_codes), not written here. An operation missing
from OPERATIONS has no summary, which the schema tests refuse.
"""

from typing import NamedTuple


class Doc(NamedTuple):
    summary: str
    description: str


TAGS = {
    "auth": "Accounts: registration, tokens, e-mail verification, the caller's identity.",
    "subscriptions": "The tier catalog, the caller's subscription, its entitlements and invoices.",
    "licensing": "Perpetual licenses: purchase, activation on devices, validation, upgrades.",
    "coupons": "Coupon validation and redemption.",
    "credits and usage": "Usage credits: the caller's balance and usage, and the service endpoints that "
    "record LLM usage (service token with the `usage:write` scope).",
    "payments": "Stripe webhooks and the customer portal.",
    "staff: customers": "Staff: subscriptions, refunds and users (export, erasure).",
    "staff: licensing": "Staff: licenses.",
    "staff: coupons": "Staff: coupons, campaigns, fraud detections and coupon analytics.",
    "staff: credits and pricing": "Staff: credit grants, deductions and their reversal, credit packs, "
    "providers, vendor prices and margin changes.",
    "staff: payments": "Staff: payment events and payment operations.",
    "staff: audit": "Staff: the audit trail.",
    "staff: webhooks": "Staff: outbound webhook endpoints, their delivery logs and resends.",
}

# Longest prefix first: the tag of a path under /api/v1/.
_TAG_PREFIXES = [
    ("admin/subscriptions/", "staff: customers"),
    ("admin/payments/", "staff: customers"),
    ("admin/users/", "staff: customers"),
    ("admin/licenses/", "staff: licensing"),
    ("admin/coupons/", "staff: coupons"),
    ("admin/campaigns/", "staff: coupons"),
    ("admin/fraud-detection/", "staff: coupons"),
    ("admin/analytics/", "staff: coupons"),
    ("admin/credits/", "staff: credits and pricing"),
    ("admin/credit-packs/", "staff: credits and pricing"),
    ("admin/providers/", "staff: credits and pricing"),
    ("admin/model-pricing/", "staff: credits and pricing"),
    ("admin/pricing-configs/", "staff: credits and pricing"),
    ("admin/payment-events/", "staff: payments"),
    ("admin/payment-operations/", "staff: payments"),
    ("admin/audit-logs/", "staff: audit"),
    ("admin/webhook-endpoints/", "staff: webhooks"),
    ("auth/", "auth"),
    ("me/credits/", "credits and usage"),
    ("credits/", "credits and usage"),
    ("me/usage/", "credits and usage"),
    ("me/licenses/", "licensing"),
    ("me/subscription/", "subscriptions"),
    ("me/entitlements/", "subscriptions"),
    ("me/invoices/", "subscriptions"),
    ("me/", "auth"),
    ("tiers/", "subscriptions"),
    ("subscriptions/", "subscriptions"),
    ("licenses/", "licensing"),
    ("coupons/", "coupons"),
    ("usage/", "credits and usage"),
    ("billing/webhooks/", "payments"),
    ("billing/portal/", "payments"),
]


def tag_of(path: str) -> str | None:
    relative = path.removeprefix("/api/v1/")
    return next((tag for prefix, tag in _TAG_PREFIXES if relative.startswith(prefix)), None)


IDEMPOTENCY_HONOURED = (
    "Makes a retry safe. The same key with the same body, from the same caller on the same path, within "
    "24 hours, answers the stored response again (with the header `Idempotent-Replayed: true`) and changes "
    "nothing; the same key with another body is a 422 `idempotency_key_reused`. An answer that asks you to "
    "come back (429, 5xx, anything with `Retry-After`) is not stored: retry with the same key."
)
IDEMPOTENCY_PAYMENT = (
    IDEMPOTENCY_HONOURED + " While the first request with a key is still talking to the payment provider, "
    "another with the same key is a 409 `idempotency_key_in_use` (retry after `Retry-After`); a retry after "
    "a 503 resumes the same payment, never a second one."
)
IDEMPOTENCY_PUBLIC = (
    "Keys are scoped to the caller. This operation needs no token: without one there is no caller, so the "
    "key (1 to 255 characters, else 400 `idempotency_key_invalid`) is not stored and the request runs as "
    "sent. With a valid bearer token it works as on every other POST: the same key and body within 24 hours "
    "answer the stored response again, the same key with another body is a 422 `idempotency_key_reused`."
)

_STAFF = "Staff with the matching permission only."

OPERATIONS = {
    # Accounts
    "v1_auth_register_create": Doc(
        "Register an account",
        "Creates an account on the free tier with its free credits and answers `{id, email}`. A verification "
        "link is e-mailed to the address. An address already registered is a 400 problem with `errors.email`.",
    ),
    "v1_auth_token_create": Doc(
        "Sign in",
        "Exchanges an e-mail and password for an access token and a refresh token. Staff accounts that need a "
        "second factor also send `otp` (an authenticator or recovery code). Repeated failures lock the account "
        "and the address out for a while (429 `login_locked_out`).",
    ),
    "v1_auth_token_refresh_create": Doc(
        "Refresh a token pair",
        "Exchanges a refresh token, once, for a new access token and the next refresh token. A refresh token "
        "presented a second time ends its sign-in: 401 `token_reused`, then `token_revoked` for every token of "
        "that sign-in.",
    ),
    "v1_auth_verify_email_retrieve": Doc(
        "Verify an e-mail address (link)",
        "The link e-mailed at registration: marks the address it names as verified. 400 "
        "`verification_token_invalid` or `verification_token_expired` otherwise.",
    ),
    "v1_auth_verify_email_create": Doc(
        "Verify an e-mail address",
        "Marks the address the posted token names as verified (for a web page that posts the link's token). "
        "400 `verification_token_invalid` or `verification_token_expired` otherwise.",
    ),
    "v1_auth_verify_email_resend_create": Doc(
        "Resend the verification e-mail",
        "Sends the caller a new verification link (202), unless the address is already verified (200).",
    ),
    "v1_me_retrieve": Doc("Who am I", "The caller's id, e-mail address, tier and whether the address is verified."),
    # Subscriptions
    "v1_tiers_list": Doc("List the tiers", "The tiers on sale with their prices, credits and features. Public."),
    "v1_me_subscription_retrieve": Doc(
        "Get my subscription", "The caller's live subscription; 404 `no_subscription` when there is none."
    ),
    "v1_me_entitlements_retrieve": Doc(
        "Get my entitlements", "What the caller may use now: the tier and its entitlements, and since when."
    ),
    "v1_me_invoices_list": Doc("List my invoices", "The caller's invoices, newest first, paginated."),
    "v1_subscriptions_create": Doc(
        "Start a subscription",
        "Starts a paid tier: 201 with the trial (tiers with trial days, once per user) or with the checkout "
        "(the URL to pay at, or the active subscription when payments are settled at once). A user in a trial "
        "of the tier starts the checkout that converts it. 409 `subscription_exists` when a paid subscription "
        "is live: change its tier instead. 503 `payment_provider_unavailable` when the payment provider did not "
        "answer: the same request again gets the same checkout.",
    ),
    "v1_subscriptions_change_tier_preview_create": Doc(
        "Preview a tier change",
        "The amounts `change-tier` would apply now: unused credit value, prorated cost of the new tier, net "
        "charge, credits adjustment and effective date. Changes nothing.",
    ),
    "v1_subscriptions_change_tier_create": Doc(
        "Change tier",
        "Upgrades apply now (the net charge collected, the prorated credits granted); downgrades are scheduled "
        "for the period end. 202 while the upgrade's payment is in flight (an asynchronous method, or a card "
        "waiting for the customer's confirmation): the change applies when it succeeds. 402 `payment_declined` "
        "leaves everything as it was; 503 `payment_provider_unavailable` means the payment's outcome is not "
        "known yet: the same request again resumes it and never charges twice; 409 `payment_in_progress` while "
        "the payment of another change is unfinished.",
    ),
    "v1_subscriptions_cancel_create": Doc(
        "Cancel a subscription",
        "Cancels at the end of the period (a trial at its end). Staff may pass `immediately` to end it now.",
    ),
    # Licensing
    "v1_me_licenses_list": Doc(
        "List my licenses", "The caller's licenses with their keys in full and their active devices."
    ),
    "v1_licenses_purchase_create": Doc(
        "Buy a license",
        "201 with the license, active when the payment settled at once, or pending with the checkout URL to pay "
        "at; the key is shown in full to its owner. 503 `payment_provider_unavailable` when the payment provider "
        "did not answer: the same request again gets the same license and checkout.",
    ),
    "v1_licenses_upgrade_create": Doc(
        "Buy a major-version upgrade",
        "Buys the upgrade of a license to the current major version: 201 with the upgrade completed, or pending "
        "with the checkout URL. 409 `upgrade_not_available` when nothing newer is on sale. The key travels in "
        "the body, so it stays out of URLs and access logs.",
    ),
    "v1_licenses_activate_create": Doc(
        "Activate a license on a device",
        "201 for a new device, 200 when the device was already active (free). 409 `activation_limit_reached` "
        "lists the active devices; 429 `device_change_limit` past the daily limit of device changes.",
    ),
    "v1_licenses_deactivate_create": Doc(
        "Deactivate a license on a device", "Frees the device's activation so another device can use it."
    ),
    "v1_licenses_validate_create": Doc(
        "Validate a license",
        "Always 200 `{valid, reason}` for a well-formed request: `reason` says why not (`bad_checksum` for a "
        "mistyped key, `unknown_key`, `suspended`, `not_activated_on_device`, ...).",
    ),
    "v1_licenses_eligibility_retrieve": Doc(
        "Check upgrade eligibility",
        "Whether the license covers `version`, and whether an upgrade to a newer line is on sale with its price "
        "and discount. 422 `bad_checksum` for a mistyped key.",
    ),
    # Coupons
    "v1_coupons_validate_create": Doc(
        "Validate a coupon",
        "Would this code redeem now, and what would it give? 200 `{valid, reason_code, discount_preview}`; the "
        "reason codes are those of a refused redemption. Changes nothing, but an unknown code counts towards "
        "the caller's limit of code guesses, as at redemption.",
    ),
    "v1_coupons_redeem_create": Doc(
        "Redeem a coupon",
        "Redeems a code and applies its effect (credits, a discount, free months or a license): 201, or a 422 "
        "problem whose `code` is the reason.",
    ),
    # Credits and usage
    "v1_credits_packs_list": Doc(
        "List the credit packs on sale",
        "The packs a signed-in user can buy, cheapest first: credits, price (a string in the currency's major "
        "unit) and how many days the credits last after the purchase (null: they never expire).",
    ),
    "v1_credits_purchase_create": Doc(
        "Buy a credit pack",
        "Starts the purchase of an active pack and answers 201 with its payment: pay at `checkout_url` (Stripe "
        "Checkout; the credits arrive when Stripe confirms the payment), or `completed` true when it is already "
        "paid and the credits are in the balance. The purchase keeps what it sold whatever happens to the pack "
        "later. Starting it again while it is unpaid answers the same checkout. 404 `unknown_pack` for a pack "
        "not on sale; 503 when the payment provider did not answer (retry: the same purchase resumes).",
    ),
    "v1_me_credits_retrieve": Doc(
        "Get my credit balance",
        "The caller's balance, the live grants in spending order, and the monthly budget (`budget`, null when "
        "none is set).",
    ),
    "v1_me_credits_budget_retrieve": Doc(
        "Get my monthly budget",
        "The caller's monthly credit budget (calendar month, UTC), whether it is a hard limit, this month's "
        "spend, what is left of it and the thresholds (50, 80, 100 %) already notified this month.",
    ),
    "v1_me_credits_budget_update": Doc(
        "Set my monthly budget",
        "Sets the caller's monthly credit budget; `monthly_credits` null removes it. Each threshold (50, 80, "
        "100 %) is notified once a month. With `hard_limit`, usage past the budget is refused with 402 "
        "`budget_exceeded` even with credits left; a hard limit without a budget is a 422 "
        "`hard_limit_without_budget`. This month's spend is kept.",
    ),
    "v1_me_credits_auto_recharge_retrieve": Doc(
        "Get my auto-recharge",
        "The caller's auto-recharge: the threshold (credits), the pack each recharge buys, the monthly cap and "
        "what this month's recharges charged (money in the pack's currency), and whether it is paused after "
        "failed recharges. Off (`enabled` false, no pack) until it is set.",
    ),
    "v1_me_credits_auto_recharge_update": Doc(
        "Set my auto-recharge",
        "When a deduction leaves the spendable balance below `threshold`, one recharge charges the saved card "
        "for `pack`, at most `monthly_cap` a calendar month (UTC). Enabling needs an active pack, a cap of at "
        "least one pack's price and a saved card (422 otherwise); enabling a paused auto-recharge resumes it.",
    ),
    "v1_me_usage_list": Doc(
        "List my usage",
        "The caller's recorded LLM requests, newest first (cursor pagination), each with its cost, the "
        "`deduction_id` of the credits it took and the grants that paid for it. Filters: `date_from`, "
        "`date_to`, `provider`, `model`.",
    ),
    "v1_me_usage_daily_list": Doc(
        "Get my daily usage",
        "Per-day totals of the caller's usage: the last 30 days unless a range (at most 366 days) is given.",
    ),
    "v1_usage_record_create": Doc(
        "Record an LLM request",
        "Service endpoint. Prices the request's tokens with the vendor price in force when it started, deducts "
        "the credits (soonest-expiring grants first) and answers 201 with the deduction. The same `request_id` "
        "again answers 200 with the first body and changes nothing. Not enough credits: 402 "
        "`insufficient_credits` with `required`, `balance` and `available`, and nothing is written; past the "
        "user's hard monthly budget: 402 `budget_exceeded` with `required` and `budget_available`. A "
        "`hold_id` captures a reservation made with `usage/reserve/`.",
    ),
    "v1_usage_record_batch_create": Doc(
        "Record LLM requests in a batch",
        "Service endpoint. Records 1 to 1,000 requests; each gets its own result, in order, with its own "
        "`status` (201, 200 for a repeat, or a problem's status and `code`). The response is 200 whatever the "
        "individual outcomes.",
    ),
    "v1_usage_check_create": Doc(
        "Check credits before a request",
        "Service endpoint. Would a request of `estimated_credits` be allowed now? Answers the balance, what "
        "is available after holds, what a hard monthly budget still allows, and when not allowed the `reason` "
        "(`insufficient_credits` or `budget_exceeded`). Changes nothing.",
    ),
    "v1_usage_reserve_create": Doc(
        "Reserve credits",
        "Service endpoint. Holds credits for a streaming call whose cost is known only at its end; capture them "
        "with the `hold_id` on `usage/record/`, or free them with `usage/release/`. Unreleased holds expire. "
        "402 `insufficient_credits` when the amount cannot be held, `budget_exceeded` when the user's hard "
        "monthly budget does not allow it.",
    ),
    "v1_usage_release_create": Doc(
        "Release a reservation", "Service endpoint. Frees the credits of a hold that will not be captured."
    ),
    # Payments
    "v1_billing_webhooks_stripe_create": Doc(
        "Receive a Stripe event",
        "For Stripe only: verified by the `Stripe-Signature` header over the raw body. 200 with the stored "
        "result, also for an event delivered again; 400 `invalid_signature`; 500 when processing failed (Stripe "
        "delivers it again).",
    ),
    # Staff: customers
    "v1_admin_subscriptions_list": Doc(
        "List subscriptions", f"{_STAFF} Filters: status, tier, billing cycle, user, e-mail."
    ),
    "v1_admin_subscriptions_retrieve": Doc("Get a subscription", _STAFF),
    "v1_admin_subscriptions_change_status_create": Doc(
        "Change a subscription's status",
        f"{_STAFF} Moves the subscription along its state machine, with a reason; audited. 409 "
        "`invalid_transition` for a move the state machine does not allow.",
    ),
    "v1_admin_payments_refund_create": Doc(
        "Refund a payment",
        f"{_STAFF} Refunds a payment fully (no amount) or partly, with a reason; audited. 200 with the refund's "
        "operation (`succeeded`, or `submitted` while the provider processes it). 503 when the payment provider "
        "did not answer: the same request again resumes the same refund, never a second one.",
    ),
    "v1_admin_users_retrieve": Doc("Export a user's data", f"{_STAFF} Everything stored about the user (GDPR export)."),
    "v1_admin_users_destroy": Doc(
        "Erase a user",
        f"{_STAFF} Erases the user and their personal data (GDPR); payments and audit rows keep their records "
        "without the user.",
    ),
    # Staff: licensing
    "v1_admin_licenses_list": Doc("List licenses", f"{_STAFF} Filters: status, BYOK, user, search."),
    "v1_admin_licenses_create": Doc("Issue a license", f"{_STAFF} Issues a license to a user; audited."),
    "v1_admin_licenses_retrieve": Doc("Get a license", _STAFF),
    "v1_admin_licenses_suspend_create": Doc(
        "Suspend a license",
        f"{_STAFF} With a reason; audited. 409 `license_transition_not_allowed` from a state that cannot be suspended.",
    ),
    "v1_admin_licenses_reactivate_create": Doc(
        "Reactivate a license", f"{_STAFF} Reactivates a suspended license, with a reason; audited."
    ),
    "v1_admin_licenses_revoke_create": Doc(
        "Revoke a license", f"{_STAFF} Revokes a license for good, with a reason; audited."
    ),
    # Staff: coupons
    "v1_admin_coupons_list": Doc(
        "List coupons", f"{_STAFF} Filters: coupon type, discount type, active, deleted, campaign, code."
    ),
    "v1_admin_coupons_create": Doc("Create a coupon", f"{_STAFF} Audited. 409 `coupon_code_taken`."),
    "v1_admin_coupons_retrieve": Doc("Get a coupon", _STAFF),
    "v1_admin_coupons_update": Doc("Change a coupon", f"{_STAFF} Audited."),
    "v1_admin_coupons_partial_update": Doc("Change some fields of a coupon", f"{_STAFF} Audited."),
    "v1_admin_coupons_destroy": Doc(
        "Delete a coupon", f"{_STAFF} A soft delete: the coupon stops validating and its history stays."
    ),
    "v1_admin_coupons_activate_create": Doc("Activate a coupon", f"{_STAFF} Audited."),
    "v1_admin_coupons_deactivate_create": Doc(
        "Deactivate a coupon", f"{_STAFF} The coupon stops validating until activated again; audited."
    ),
    "v1_admin_coupons_redemptions_list": Doc("List a coupon's redemptions", f"{_STAFF} Newest first, paginated."),
    "v1_admin_campaigns_list": Doc("List campaigns", _STAFF),
    "v1_admin_campaigns_create": Doc("Create a campaign", f"{_STAFF} Audited."),
    "v1_admin_campaigns_retrieve": Doc("Get a campaign", _STAFF),
    "v1_admin_campaigns_update": Doc("Change a campaign", f"{_STAFF} Audited."),
    "v1_admin_campaigns_partial_update": Doc("Change some fields of a campaign", f"{_STAFF} Audited."),
    "v1_admin_campaigns_destroy": Doc(
        "Delete a campaign",
        f"{_STAFF} 409 `campaign_has_redemptions` once a coupon of the campaign was redeemed: deactivate it instead.",
    ),
    "v1_admin_campaigns_coupons_list": Doc("List a campaign's coupons", f"{_STAFF} Paginated."),
    "v1_admin_campaigns_coupons_create": Doc(
        "Add a coupon to a campaign",
        f"{_STAFF} 409 `coupon_in_another_campaign` when the coupon belongs to another campaign.",
    ),
    "v1_admin_campaigns_coupons_destroy": Doc("Remove a coupon from a campaign", f"{_STAFF} Audited."),
    "v1_admin_campaigns_generate_coupons_create": Doc(
        "Generate single-use coupons",
        f"{_STAFF} Creates `count` single-use codes with a prefix for the campaign and answers them.",
    ),
    "v1_admin_fraud_detection_list": Doc(
        "List fraud detections",
        f"{_STAFF} Filters: detection type, severity, flagged, resolved, user, coupon.",
    ),
    "v1_admin_fraud_detection_retrieve": Doc("Get a fraud detection", _STAFF),
    "v1_admin_fraud_detection_resolve_create": Doc(
        "Resolve a fraud detection", f"{_STAFF} Records how the detection was resolved; audited."
    ),
    "v1_admin_analytics_coupon_performance_retrieve": Doc(
        "Coupon performance",
        f"{_STAFF} Redemptions, discount given, revenue after discount and conversions to paid, by coupon and "
        "by campaign, over a date range. Money is never converted: `discount_total_usd` and `revenue_usd` are "
        "the USD redemptions', `by_currency` has each currency's `{discount_total, revenue}`.",
    ),
    # Staff: credits and pricing
    "v1_admin_credits_grant_create": Doc(
        "Grant credits",
        f"{_STAFF} Grants a user credits with a reason and an optional expiry; audited. 201 "
        "`{allocation_id, balance_after}`.",
    ),
    "v1_admin_credits_auto_recharge_retrieve": Doc(
        "Get a user's auto-recharge", f"{_STAFF} A user's auto-recharge, as `GET me/credits/auto-recharge/` shows it."
    ),
    "v1_admin_credits_auto_recharge_update": Doc(
        "Set a user's auto-recharge",
        f"{_STAFF} Sets a user's auto-recharge with the rules of `PUT me/credits/auto-recharge/`; audited.",
    ),
    "v1_admin_credits_budget_update": Doc(
        "Set a user's monthly budget",
        f"{_STAFF} Sets a user's monthly credit budget and hard limit for them (as `PUT me/credits/budget/`); audited.",
    ),
    "v1_admin_credits_deductions_list": Doc(
        "List credit deductions",
        f"{_STAFF} Every deduction of credits, newest first, paginated; each with its usage row's request, "
        "provider and model when it paid for an LLM request. Filters: user, date range (`created_after`, "
        "`created_before`), provider, model, reason. Its `id` is what `reverse/` takes.",
    ),
    "v1_admin_credits_deductions_reverse_create": Doc(
        "Reverse a deduction",
        f"{_STAFF} Gives the credits of a deduction back as a new grant, with a reason; audited. The deduction "
        "stays; a reversal row records the change. 409 `already_reversed`, `not_reversible`.",
    ),
    "v1_admin_credit_packs_list": Doc(
        "List credit packs", f"{_STAFF} Every pack, retired ones included, newest first. Filters: active, currency."
    ),
    "v1_admin_credit_packs_create": Doc(
        "Add a credit pack",
        f"{_STAFF} Audited. The price is in the currency's major unit, with no fraction of its minor unit "
        "(422 `invalid_price`).",
    ),
    "v1_admin_credit_packs_retrieve": Doc("Get a credit pack", _STAFF),
    "v1_admin_credit_packs_update": Doc(
        "Change a credit pack",
        f"{_STAFF} Audited. Once a purchase of the pack is paid, its price, currency, credits and expiry stay as "
        "sold (409 `pack_sold`): retire it (`is_active` false) and add another. Packs are never deleted.",
    ),
    "v1_admin_credit_packs_partial_update": Doc(
        "Change some fields of a credit pack",
        f"{_STAFF} Audited. A pack once paid for keeps its price, currency, credits and expiry (409 `pack_sold`); "
        "its name and whether it is on sale can change.",
    ),
    "v1_admin_providers_list": Doc("List LLM providers", f"{_STAFF} Filters: API type, enabled."),
    "v1_admin_providers_create": Doc("Add an LLM provider", f"{_STAFF} Audited."),
    "v1_admin_providers_retrieve": Doc("Get an LLM provider", _STAFF),
    "v1_admin_providers_update": Doc("Change an LLM provider", f"{_STAFF} Audited."),
    "v1_admin_providers_partial_update": Doc("Change some fields of an LLM provider", f"{_STAFF} Audited."),
    "v1_admin_model_pricing_list": Doc(
        "List vendor prices",
        f"{_STAFF} Vendor prices with their history, so the price a past request paid stays visible. Filters: "
        "provider, model, active.",
    ),
    "v1_admin_model_pricing_create": Doc(
        "Set a vendor price",
        f"{_STAFF} A new price for a model ends the one in force; prices are never edited. 201, or 200 when the "
        "same price was already set.",
    ),
    "v1_admin_model_pricing_retrieve": Doc("Get a vendor price", _STAFF),
    "v1_admin_pricing_configs_list": Doc(
        "List margin changes", f"{_STAFF} Filters: scope type, approval status, tier, active."
    ),
    "v1_admin_pricing_configs_create": Doc(
        "Propose a margin change",
        f"{_STAFF} Proposes a margin multiplier for a scope; it applies once another staff member approves it.",
    ),
    "v1_admin_pricing_configs_retrieve": Doc("Get a margin change", _STAFF),
    "v1_admin_pricing_configs_approve_create": Doc(
        "Approve a margin change",
        f"{_STAFF} 403 `self_approval`: nobody approves their own change. 409 `not_pending` once decided.",
    ),
    "v1_admin_pricing_configs_reject_create": Doc(
        "Reject a margin change", f"{_STAFF} With a reason; 409 `not_pending` once decided."
    ),
    "v1_admin_pricing_configs_simulate_create": Doc(
        "Simulate a margin change",
        f"{_STAFF} The margin and revenue this change would have moved over the last 30 days. Changes nothing.",
    ),
    # Payments
    "v1_billing_portal_create": Doc(
        "Open the customer portal",
        "A session of Stripe's customer portal for the caller, where they update their card, see their "
        "invoices and cancel: answers `{url, provider}`; open the URL in a browser. The caller's Stripe "
        "customer is created the first time. 503 `payment_provider_unavailable` when Stripe did not answer: "
        "nothing was written, retry later.",
    ),
    "v1_billing_portal_offline_retrieve": Doc(
        "The portal without Stripe",
        "Where the portal sends a customer when the service runs without Stripe (development): says there is "
        "no customer portal and where the invoices are listed.",
    ),
    # Staff: payments
    "v1_admin_payments_unmatched_list": Doc(
        "List unmatched Stripe events",
        f"{_STAFF} Stripe events about an object nothing here is linked to (a subscription, customer or "
        "checkout not known here), each with the reason. They were acknowledged to Stripe, which will not send "
        "them again: link the object, then reprocess the event.",
    ),
    "v1_admin_payments_unmatched_retrieve": Doc("Get an unmatched Stripe event", _STAFF),
    "v1_admin_payments_unmatched_reprocess_create": Doc(
        "Reprocess an unmatched Stripe event",
        f"{_STAFF} Processes the event again once its object is known (what it needs is read from Stripe "
        "first); audited. Answers the event as it is now: processed, or still unmatched with the reason.",
    ),
    "v1_admin_payment_events_list": Doc(
        "List payment events", f"{_STAFF} Every payment event received or recorded, newest first. Read-only."
    ),
    "v1_admin_payment_events_retrieve": Doc("Get a payment event", _STAFF),
    "v1_admin_payment_operations_list": Doc(
        "List payment operations",
        f"{_STAFF} Every money movement and provider change, with its state. Filters: user, kind, state, "
        "creation time.",
    ),
    "v1_admin_payment_operations_retrieve": Doc("Get a payment operation", _STAFF),
    "v1_admin_payment_operations_reconcile_create": Doc(
        "Reconcile a payment operation",
        f"{_STAFF} Settles an unfinished operation now from what the payment provider says of it; audited.",
    ),
    # Staff: audit
    "v1_admin_audit_logs_list": Doc(
        "List audit rows",
        f"{_STAFF} The audit trail, newest first. Filters: actor, resource type and id, action, date range. Read-only.",
    ),
    "v1_admin_audit_logs_retrieve": Doc("Get an audit row", _STAFF),
    "v1_admin_audit_logs_seal_create": Doc(
        "Seal the audit chain now",
        f"{_STAFF} Appends every committed unsealed audit row to the hash chain (the sealer job does this every "
        "few seconds) and answers how many were sealed and where the chain ends.",
    ),
    # Staff: outbound webhooks
    "v1_admin_webhook_endpoints_list": Doc("List webhook endpoints", f"{_STAFF} Filter: active."),
    "v1_admin_webhook_endpoints_create": Doc(
        "Register a webhook endpoint",
        f"{_STAFF} The answer holds the signing secret in full, this once (later answers show its first "
        "characters). `event_types` lists event types or whole families (`credits`); empty: every event. Audited.",
    ),
    "v1_admin_webhook_endpoints_retrieve": Doc("Get a webhook endpoint", _STAFF),
    "v1_admin_webhook_endpoints_update": Doc("Change a webhook endpoint", f"{_STAFF} Audited."),
    "v1_admin_webhook_endpoints_partial_update": Doc("Change some fields of a webhook endpoint", f"{_STAFF} Audited."),
    "v1_admin_webhook_endpoints_destroy": Doc(
        "Disable a webhook endpoint",
        f"{_STAFF} The endpoint gets no new events and its pending deliveries fail; it and its delivery log "
        "stay. Audited.",
    ),
    "v1_admin_webhook_endpoints_enable_create": Doc(
        "Enable a webhook endpoint", f"{_STAFF} It receives new events again, with a clean failure record. Audited."
    ),
    "v1_admin_webhook_endpoints_deliveries_list": Doc(
        "List an endpoint's deliveries",
        f"{_STAFF} Newest first, paginated, filter `status`: each event sent to the endpoint, its attempts and "
        "the last answer.",
    ),
    "v1_admin_webhook_endpoints_deliveries_resend_create": Doc(
        "Resend a delivery",
        f"{_STAFF} Sends the event again now, with the same `webhook-id`, and retries it as a new delivery. "
        "409 `webhook_endpoint_disabled` while the endpoint is disabled. Audited.",
    ),
}

# Success bodies of the contract (SPEC 5), by operation and status.
SUCCESS_EXAMPLES = {
    "v1_auth_register_create": {201: {"id": 42, "email": "ada@example.com"}},
    "v1_auth_token_create": {200: {"access": "eyJhbGciOiJIUzI1NiIs...", "refresh": "eyJhbGciOiJIUzI1NiIs..."}},
    "v1_me_retrieve": {200: {"id": 42, "email": "ada@example.com", "tier": "free", "email_verified": False}},
    "v1_me_credits_retrieve": {
        200: {
            "balance": 2000,
            "grants": [
                {
                    "id": "3f6c1d9e-8a2b-4c7d-9e1f-2a3b4c5d6e7f",
                    "source": "subscription",
                    "remaining": 2000,
                    "original_amount": 2000,
                    "expires_at": "2026-04-01T00:00:00Z",
                }
            ],
            "budget": {
                "monthly_credits": 5000,
                "hard_limit": True,
                "spent_this_month": 4100,
                "remaining": 900,
                "thresholds_notified": [50, 80],
            },
        }
    },
    "v1_usage_record_create": {
        201: {
            "request_id": "0b5c3a52-4bd4-4f0c-9a54-7f3d1c1b9e21",
            "status": "success",
            "credits_deducted": 42,
            "balance_after": 1958,
            "vendor_cost": "0.0350000000",
            "credit_value_usd": "0.0420000000",
            "margin_multiplier": "1.2000",
            "byok": False,
            "hold_id": None,
            "deduction_id": "8d7e6f5a-4b3c-4d2e-9f1a-0b1c2d3e4f5a",
        }
    },
    "v1_usage_check_create": {
        200: {
            "allowed": False,
            "reason": "budget_exceeded",
            "balance": 2000,
            "available": 1500,
            "budget_available": 400,
        }
    },
    "v1_usage_reserve_create": {
        201: {
            "hold_id": "5f0e8e58-3a55-4d2b-8d1e-2b0f6f1f3c11",
            "status": "held",
            "held": 500,
            "available": 1500,
            "expires_at": "2026-03-01T12:15:00Z",
        }
    },
    "v1_admin_credits_grant_create": {
        201: {"allocation_id": "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d", "balance_after": 7000}
    },
    "v1_subscriptions_change_tier_preview_create": {
        200: {
            "change_type": "upgrade",
            "unused_credit_value_usd": "9.50",
            "new_tier_prorated_cost_usd": "24.50",
            "net_charge_usd": "15.00",
            "credits_adjustment": 25000,
            "days_remaining": 15,
            "days_in_cycle": 30,
            "effective_date": "2026-03-16T00:00:00Z",
        }
    },
    "v1_licenses_validate_create": {200: {"valid": False, "reason": "bad_checksum"}},
}

REQUEST_EXAMPLES = {
    "v1_auth_register_create": {"register": {"email": "ada@example.com", "password": "a long passphrase 42"}},
    "v1_auth_token_create": {"sign in": {"email": "ada@example.com", "password": "a long passphrase 42"}},
    "v1_usage_record_create": {
        "record": {
            "request_id": "0b5c3a52-4bd4-4f0c-9a54-7f3d1c1b9e21",
            "user_id": 42,
            "provider": "openai",
            "model": "gpt-4o",
            "input_tokens": 1200,
            "output_tokens": 300,
            "request_type": "chat",
            "request_started_at": "2026-03-01T12:00:00Z",
            "request_completed_at": "2026-03-01T12:00:02Z",
        }
    },
    "v1_usage_reserve_create": {"reserve": {"user_id": 42, "estimated_credits": 500}},
    "v1_usage_check_create": {"check": {"user_id": 42, "estimated_credits": 500}},
    "v1_me_credits_budget_update": {"budget": {"monthly_credits": 5000, "hard_limit": True}},
    "v1_admin_credits_grant_create": {"grant": {"user_id": 42, "amount": 5000, "reason": "Goodwill for an outage"}},
}

# Problem bodies whose members the code computes at run time: what they look like. By code, or by
# (operation, code) where one operation says more.
PROBLEM_EXAMPLES = {
    "insufficient_credits": {
        "detail": "This needs 1200 credits; 800 are available.",
        "required": 1200,
        "balance": 1000,
        "available": 800,
    },
    "budget_exceeded": {
        "detail": "This needs 500 credits; the monthly budget allows 400 more.",
        "required": 500,
        "budget_available": 400,
    },
    "payment_declined": {"detail": "Your card was declined.", "decline_code": "card_declined"},
    "payment_provider_unavailable": {"retry_after": 30},
    "activation_limit_reached": {
        "detail": "All 3 activations are in use: deactivate a device first.",
        "max_activations": 3,
        "activations_used": 3,
        "active_devices": [{"device_fingerprint": "9f2c...", "device_name": "Work laptop"}],
    },
    "throttled": {"detail": "Request was throttled. Expected available in 60 seconds.", "retry_after": 60},
    "validation_error": {"errors": {"field": ["This field is required."]}},
    ("v1_auth_register_create", "validation_error"): {
        "errors": {"email": ["An account with this e-mail already exists."]}
    },
}
