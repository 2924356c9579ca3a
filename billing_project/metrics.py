"""Prometheus metrics of the service, defined once. `/metrics` exposes them (billing_project.health)."""

from prometheus_client import Counter

IDEMPOTENT_HITS = Counter("idempotent_hits_total", "Requests answered from a stored idempotent result.", ["operation"])
SERVICE_AUTH_ATTEMPTS = Counter("service_auth_attempts_total", "Service token authentication attempts.", ["result"])
REDIS_ERRORS = Counter("redis_errors_total", "Errors talking to Redis.")
USAGE_RECORDING_ATTEMPTS = Counter(
    "usage_recording_attempts_total", "Usage events recorded, by outcome (status or refusal code).", ["result"]
)
CREDITS_DEDUCTED = Counter("credits_deducted_total", "Credits deducted for usage.")
WEBHOOK_REPLAY_BLOCKS = Counter(
    "billing_webhook_replay_block_total", "Webhook deliveries of an event already processed (answered from its record)."
)
WEBHOOK_INVALID_SIGNATURES = Counter(
    "billing_webhook_invalid_sig_total", "Webhook deliveries refused for a missing, bad or stale signature."
)
TRIAL_EXPIRATIONS = Counter("trial_expirations_total", "Trials that ended unpaid and went to the free tier.")
TRIAL_REMINDERS_SENT = Counter("trial_reminder_emails_total", "Trial reminder e-mails sent.", ["days"])
COUPON_REDEMPTIONS = Counter(
    "coupon_redemptions_total", "Coupon redemptions, by result (success or the refusal's reason code).", ["result"]
)
