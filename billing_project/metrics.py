"""Prometheus metrics of the service, defined once. `/metrics` exposes them (billing_project.health)."""

from prometheus_client import Counter, Histogram

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
DB_TRANSACTION_CONFLICTS = Counter(
    "db_transaction_conflicts_total",
    "Transactions that met a deadlock or serialization failure, by kind, by what followed (retried, or "
    "gave_up: a request answered 409 transaction_conflict) and by operation (a service, or request).",
    ["kind", "outcome", "operation"],
)

# HTTP, recorded by billing_project.observability.ObservabilityMiddleware. `route` is the URL pattern
# (or "unmatched"), never the path. The histogram takes the status class (2xx..5xx) to keep its
# ~15 series per label set few; the counter, one series each, keeps the exact code (401 vs 429 vs 409).
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route pattern and status class.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by method, route pattern and status code.",
    ["method", "route", "status"],
)

PAYMENT_OPERATIONS = Counter(
    "payment_operations_total", "Payment operations settled, by kind and final state.", ["kind", "state"]
)
JOB_ITEM_FAILURES = Counter(
    "job_item_failures_total", "Items of a periodic job that failed (the job went on with the others).", ["job"]
)
