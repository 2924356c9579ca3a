"""Settings, all from the environment (django-environ).

With no environment at all the service runs on the embedded default: SQLite, a local-memory cache,
Celery tasks executed eagerly in-process, Stripe off (the offline payment provider) and console e-mail.
Production (DEBUG off) refuses to start with unsafe values: see billing_project/checks.py.
"""

import ipaddress
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import environ
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-in-production"
DEV_SERVICE_JWT_SECRET = "dev-only-insecure-service-jwt-secret-change-me"

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"] if DEBUG else [])
DATABASE_URL = env.str("DATABASE_URL", default="")
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
JWT_SECRET = env.str("JWT_SECRET", default="") or SECRET_KEY
SERVICE_JWT_SECRET = env.str("SERVICE_JWT_SECRET", default=DEV_SERVICE_JWT_SECRET)
# During a rotation the key being retired still verifies the tokens it signed (until they are reissued).
SERVICE_JWT_PREVIOUS_SECRET = env.str("SERVICE_JWT_PREVIOUS_SECRET", default="")
# Service tokens: the lifetime `issue_service_token` gives by default, and the longest it accepts.
SERVICE_TOKEN_LIFETIME_DAYS = env.int("SERVICE_TOKEN_LIFETIME_DAYS", default=30)
SERVICE_TOKEN_MAX_LIFETIME_DAYS = env.int("SERVICE_TOKEN_MAX_LIFETIME_DAYS", default=90)
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_WEBHOOK_TOLERANCE_SECONDS = 300
# Which payment provider moves money: "stripe", or "offline" (checkouts and charges succeed at once;
# development and demos). Unset, it is Stripe when STRIPE_SECRET_KEY is set and offline otherwise,
# and production (DEBUG off) refuses to start unless one of the two is explicitly usable.
PAYMENTS_PROVIDER = env.str("PAYMENTS_PROVIDER", default="")
# Stripe's API address: an emulator's in tests or staging.
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
# Each Stripe request waits at most connect + read seconds, tried 1 + retries times (the SDK's retries
# reuse the idempotency key): 2 x (3 + 8) s plus a short back-off, well under gunicorn's 30 s timeout.
STRIPE_CONNECT_TIMEOUT_SECONDS = env.float("STRIPE_CONNECT_TIMEOUT_SECONDS", default=3)
STRIPE_READ_TIMEOUT_SECONDS = env.float("STRIPE_READ_TIMEOUT_SECONDS", default=8)
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=1)
# reconcile_payments settles operations left unfinished this long (nobody is driving them any more),
# waits this long for an asynchronous payment (bank debits take days) and for a checkout to be paid.
PAYMENT_RECONCILE_AFTER_MINUTES = env.int("PAYMENT_RECONCILE_AFTER_MINUTES", default=15)
PAYMENT_ASYNC_MAX_DAYS = env.int("PAYMENT_ASYNC_MAX_DAYS", default=14)
PAYMENT_CHECKOUT_MAX_HOURS = env.int("PAYMENT_CHECKOUT_MAX_HOURS", default=25)
# reconcile_stripe (and its daily job) compares the objects of this many days back by default: a
# month's renewals with their retries.
STRIPE_RECONCILE_DAYS = env.int("STRIPE_RECONCILE_DAYS", default=35)
# One run of an operation's provider steps at a time; a crashed run's claim lapses after this.
PAYMENT_RUN_LEASE_SECONDS = env.int("PAYMENT_RUN_LEASE_SECONDS", default=60)
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
# Browsers of other origins call the API only: the console, health and metrics answer no CORS, nor
# Stripe's webhook, which only Stripe's servers call (its CORS work was 10 us of a redelivery's 350).
CORS_URLS_REGEX = r"^/api/(?!v1/billing/webhooks/)"
CREDIT_VALUE_USD = Decimal(env.str("CREDIT_VALUE_USD", default="0.001"))
DEFAULT_MARGIN_MULTIPLIER = Decimal(env.str("DEFAULT_MARGIN_MULTIPLIER", default="1.5"))
CREDIT_HOLD_TTL = timedelta(seconds=env.int("CREDIT_HOLD_TTL", default=15 * 60))
# Auto-recharge pauses after this many failed recharges in a row (declined, or waiting for the customer).
AUTO_RECHARGE_MAX_FAILURES = env.int("AUTO_RECHARGE_MAX_FAILURES", default=3)
# At most one auto-recharge check is queued per user in this many seconds (deductions below the threshold).
AUTO_RECHARGE_QUEUE_SECONDS = env.int("AUTO_RECHARGE_QUEUE_SECONDS", default=30)
# A usage deduction that leaves fewer spendable credits than this tells the user once (credits.balance_low):
# a fixed number, 200 credits (USD 0.20) by default, a tenth of the free tier's monthly allocation.
CREDITS_LOW_BALANCE_THRESHOLD = env.int("CREDITS_LOW_BALANCE_THRESHOLD", default=200)
LICENSE_DEVICE_CHANGES_PER_DAY = env.int("LICENSE_DEVICE_CHANGES_PER_DAY", default=6)
# Perpetual licenses: the release on sale, its price, and paid upgrades to the next major version.
LICENSE_CURRENT_VERSION = env.str("LICENSE_CURRENT_VERSION", default="1.0.0")
LICENSE_PRICE_USD = Decimal(env.str("LICENSE_PRICE_USD", default="199.00"))
LICENSE_UPGRADE_PRICE_USD = Decimal(env.str("LICENSE_UPGRADE_PRICE_USD", default="99.00"))
LICENSE_EARLY_UPGRADE_DISCOUNT_PERCENT = Decimal(env.str("LICENSE_EARLY_UPGRADE_DISCOUNT_PERCENT", default="20"))
LICENSE_EARLY_UPGRADE_DAYS = env.int("LICENSE_EARLY_UPGRADE_DAYS", default=90)
# Where Stripe Checkout sends the customer back after a license purchase or upgrade.
LICENSE_CHECKOUT_SUCCESS_URL = env.str("LICENSE_CHECKOUT_SUCCESS_URL", default="")
LICENSE_CHECKOUT_CANCEL_URL = env.str("LICENSE_CHECKOUT_CANCEL_URL", default="")
# ... and after starting a subscription.
SUBSCRIPTION_CHECKOUT_SUCCESS_URL = env.str("SUBSCRIPTION_CHECKOUT_SUCCESS_URL", default="")
SUBSCRIPTION_CHECKOUT_CANCEL_URL = env.str("SUBSCRIPTION_CHECKOUT_CANCEL_URL", default="")
# ... and after buying a credit pack.
CREDIT_PACK_CHECKOUT_SUCCESS_URL = env.str("CREDIT_PACK_CHECKOUT_SUCCESS_URL", default="")
CREDIT_PACK_CHECKOUT_CANCEL_URL = env.str("CREDIT_PACK_CHECKOUT_CANCEL_URL", default="")
# Where Stripe's customer portal sends the customer back (unset: the portal configuration's default).
BILLING_PORTAL_RETURN_URL = env.str("BILLING_PORTAL_RETURN_URL", default="")
# Dunning: retries of a failed payment, in days after the failure, then a grace period before suspension.
DUNNING_RETRY_DAYS = (1, 3, 5, 7)
DUNNING_GRACE_PERIOD_DAYS = env.int("DUNNING_GRACE_PERIOD_DAYS", default=7)
# Who retries a failed subscription payment, so that a card is never charged by both. "project"
# (default): the dunning retries above, and Stripe is told to stop retrying that invoice
# (auto_advance off; the one-off invoices the project creates never auto-advance). "stripe":
# Stripe's automatic retries (Smart Retries) for the invoices of Stripe's subscriptions; the project
# schedules none for them, follows the invoice events, and Stripe's last failed attempt starts the
# grace period. A charge the project makes itself is retried by the project either way.
PAYMENT_RETRIES_OWNER = env.str("PAYMENT_RETRIES_OWNER", default="project")
if PAYMENT_RETRIES_OWNER not in ("project", "stripe"):
    raise ValueError(f"PAYMENT_RETRIES_OWNER must be project or stripe, not {PAYMENT_RETRIES_OWNER!r}")

# Coupon fraud rules (SPEC 4). Velocity counts successful redemptions in the last hour; reaching
# the flag level records a detection for review, reaching the block level refuses the redemption.
COUPON_VELOCITY_USER = (
    env.int("COUPON_VELOCITY_USER_FLAG", default=3),
    env.int("COUPON_VELOCITY_USER_BLOCK", default=5),
)
COUPON_VELOCITY_DEVICE = (
    env.int("COUPON_VELOCITY_DEVICE_FLAG", default=3),
    env.int("COUPON_VELOCITY_DEVICE_BLOCK", default=5),
)
COUPON_VELOCITY_IP = (env.int("COUPON_VELOCITY_IP_FLAG", default=10), env.int("COUPON_VELOCITY_IP_BLOCK", default=20))
# Accounts that may redeem one coupon from one device (30 days) before the next is blocked; the
# second account is flagged. Accounts from one IP (24 hours) are only flagged: IPs are shared.
COUPON_ACCOUNTS_PER_DEVICE = env.int("COUPON_ACCOUNTS_PER_DEVICE", default=2)
COUPON_ACCOUNTS_PER_IP_FLAG = env.int("COUPON_ACCOUNTS_PER_IP_FLAG", default=5)
# Unknown codes tried by one user or IP in the last hour: flagged, then blocked (code guessing).
COUPON_GUESSING = (env.int("COUPON_GUESSING_FLAG", default=3), env.int("COUPON_GUESSING_BLOCK", default=5))
# A coupon reserved by a checkout that is never paid is released after this long: Stripe's
# Checkout sessions live 24 hours at most, and the margin covers late webhook deliveries.
COUPON_CHECKOUT_HOLD = timedelta(hours=env.int("COUPON_CHECKOUT_HOLD_HOURS", default=48))
COUPON_BULK_MAX = 10_000
# E-mail verification (billing_project.email_verification): how long a link works, and where it
# points ({token} stands for the token; empty: this API's own GET auth/verify-email/).
EMAIL_VERIFICATION_MAX_AGE = timedelta(hours=env.int("EMAIL_VERIFICATION_HOURS", default=72))
EMAIL_VERIFICATION_URL = env.str("EMAIL_VERIFICATION_URL", default="")
# Whether a sign-up's free-tier credits and any free trial wait until its e-mail address is verified.
# On by default in production, where they are what a throwaway address would farm; off in development.
FREE_OFFERS_REQUIRE_VERIFIED_EMAIL = env.bool("FREE_OFFERS_REQUIRE_VERIFIED_EMAIL", default=not DEBUG)
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
# A key whose request never finished (a killed worker) is freed after this; longer than any request.
IDEMPOTENCY_IN_PROGRESS_TIMEOUT = timedelta(minutes=5)
# How many reverse proxies sit in front of the service; X-Forwarded-For is trusted only that deep,
# and only on connections from TRUSTED_PROXIES (addresses or networks, e.g. "10.0.0.0/8,127.0.0.1").
NUM_PROXIES = env.int("NUM_PROXIES", default=0)
TRUSTED_PROXIES = [str(ipaddress.ip_network(entry, strict=False)) for entry in env.list("TRUSTED_PROXIES", default=[])]

INSTALLED_APPS = [
    # The console's site (second factor, lockout page, sessions) in place of django.contrib.admin's.
    "billing_project.apps.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    "django_celery_beat",
    "django_celery_results",
    "import_export",
    # Before auditlog: audit's `auditlogflush` replaces auditlog's, which would wipe the object history.
    "audit",
    "auditlog",
    "billing_project",
    "payments",
    "licensing",
    "credits",
    "subscriptions",
    "coupons",
]

MIDDLEWARE = [
    # First: the request id and the latency cover everything below, redirects and 404s included.
    "billing_project.observability.ObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "billing_project.middleware.ApiCorsMiddleware",
    # Before anything reads the body (and inside CORS, so browsers can read the answer): a body too
    # large is a 413 problem, not RequestDataTooBig.
    "billing_project.middleware.RequestBodyLimitMiddleware",
    # The console's browser session: the API, health and metrics pass through the Console* ones.
    "billing_project.middleware.ConsoleSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "billing_project.middleware.ConsoleCsrfViewMiddleware",
    "billing_project.middleware.ConsoleAuthenticationMiddleware",
    "billing_project.middleware.ConsoleOTPMiddleware",
    "billing_project.middleware.ConsoleMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Also names the actor and address of django-auditlog's history entries (audit.history).
    "audit.middleware.AuditContextMiddleware",
    # Outside the idempotency key: a retried request takes its key afresh, a conflict is never stored.
    "billing_project.middleware.TransactionRetryMiddleware",
    "billing_project.idempotency.IdempotencyMiddleware",
    # Last: turns a sign-in lockout into the console's lockout page (the API answers its own 429).
    "billing_project.middleware.ConsoleAxesMiddleware",
]
# django-axes and Django's CSRF check look for their middleware by name; ConsoleAxesMiddleware and
# ConsoleCsrfViewMiddleware are them, confined to the console (billing_project.checks checks the CSRF one).
SILENCED_SYSTEM_CHECKS = ["axes.W002", "security.W003"]

# An object's history entry carries the id of the request (or task) that made the change.
AUDITLOG_CID_GETTER = "billing_project.observability.request_id_now"

AUTHENTICATION_BACKENDS = [
    # First: refuses every attempt on a locked-out account or address before a password is checked.
    "axes.backends.AxesStandaloneBackend",
    "billing_project.signin.EmailBackend",
]

# Staff sign-in (console and auth/token/): failures are counted per account and per client IP;
# LOGIN_FAILURE_LIMIT failures on either lock it out for LOGIN_LOCKOUT_MINUTES.
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", default=15)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A success does not clear the counts: signing in to one's own account must not reset an address's
# failures on others. Counts fall away LOGIN_LOCKOUT_MINUTES after the last failure.
AXES_RESET_ON_SUCCESS = False
# Successful sign-ins are audited and logged by billing_project.signin; axes keeps only failures.
AXES_DISABLE_ACCESS_LOG = True
AXES_USERNAME_CALLABLE = "billing_project.signin.attempted_username"
AXES_CLIENT_IP_CALLABLE = "billing_project.net.client_ip"
AXES_LOCKOUT_CALLABLE = "billing_project.signin.lockout_response"
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "otp", "otp_token"]
AXES_VERBOSE = False
# Staff need a second factor (TOTP, or a recovery code) for the console and for staff tokens.
STAFF_2FA_REQUIRED = env.bool("STAFF_2FA_REQUIRED", default=not DEBUG)
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Billing console")
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
STAFF_RECOVERY_CODES = 10

ROOT_URLCONF = "billing_project.urls"
WSGI_APPLICATION = "billing_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db_url_config(DATABASE_URL or f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Persistent connections with a health check: one connection per worker, reused across requests,
    # checked when it has been idle DB_HEALTH_CHECK_IDLE_SECONDS (billing_project/postgresql).
    DATABASES["default"]["ENGINE"] = "billing_project.postgresql"
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=600)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int("DB_CONNECT_TIMEOUT", default=5)
else:
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
DB_HEALTH_CHECK_IDLE_SECONDS = env.float("DB_HEALTH_CHECK_IDLE_SECONDS", default=1.0)
# The hot paths' written-out statements prepared once per PostgreSQL connection (billing_project/postgresql); off
# behind a pooler that hands a session's statements to other sessions (PgBouncer's transaction mode).
DB_PREPARED_STATEMENTS = env.bool("DB_PREPARED_STATEMENTS", default=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# A service transaction (billing_project.transactions) or a request (billing_project.middleware) that
# meets a deadlock or serialization failure runs again this many times, after a random pause of up
# to DB_CONFLICT_BACKOFF_SECONDS * 2**(attempt - 1).
DB_CONFLICT_RETRIES = env.int("DB_CONFLICT_RETRIES", default=3)
DB_CONFLICT_BACKOFF_SECONDS = 0.05

# Redis behind a circuit breaker (billing_project/cache_breaker.py): after this many consecutive errors
# no call reaches Redis for the cool-down, reads are misses and the API answers from the database.
CACHE_BREAKER_FAILURES = env.int("CACHE_BREAKER_FAILURES", default=5)
CACHE_BREAKER_COOLDOWN_SECONDS = env.float("CACHE_BREAKER_COOLDOWN_SECONDS", default=30)
# Every key in Redis starts with this, so services (or test runs) sharing a database keep apart.
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="billing")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "billing_project.cache_breaker.CircuitBreakerRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
                # Errors reach the breaker, which answers a miss instead: the database is the source of truth.
                "IGNORE_EXCEPTIONS": False,
            },
            "KEY_PREFIX": CACHE_KEY_PREFIX,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# What one worker remembers of the shared cache's answers on the hottest paths (a service token or a
# user still live, the price book's version), for PROCESS_CACHE_SECONDS: a change made by another
# worker reaches it within that time; the worker that makes it forgets its own copy at once.
PROCESS_CACHE_SECONDS = env.float("PROCESS_CACHE_SECONDS", default=1.0)
CACHES["process"] = {
    "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
    "LOCATION": "process",
    "TIMEOUT": PROCESS_CACHE_SECONDS,
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
WHITENOISE_USE_FINDERS = True

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@localhost")
# Who is told of what needs staff (an outbound webhook endpoint disabled); empty: every active superuser.
STAFF_NOTIFICATION_EMAILS = env.list("STAFF_NOTIFICATION_EMAILS", default=[])

# Outbound webhooks (billing_project.webhook_delivery). A receiver answers quickly or the attempt fails.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0)
# The wait after each failed attempt (each with +-10 % jitter), about three days in all; then the
# delivery fails. The Standard Webhooks specification's own schedule, continued to three days.
WEBHOOK_RETRY_DELAYS = [
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    *[timedelta(hours=10)] * 6,
]
# An endpoint failing this long with no success since is disabled and staff are told.
WEBHOOK_ENDPOINT_DISABLE_AFTER = timedelta(days=env.int("WEBHOOK_ENDPOINT_DISABLE_AFTER_DAYS", default=5))
# How long a claimed delivery is kept from other workers: a worker that dies mid-send gives it back then.
WEBHOOK_CLAIM_SECONDS = 60
# Endpoints reach public addresses only: an endpoint URL naming (or resolving to, at each attempt) a
# loopback, private, link-local or reserved address is refused, so that nobody with the console can make
# the service call its own network. On for local development (DEBUG) and behind a private egress proxy.
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env.bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", default=DEBUG)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "billing_project.auth.ServiceTokenAuthentication",
        "billing_project.auth.UserTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["billing_project.auth.IsUser"],
    "DEFAULT_RENDERER_CLASSES": ["billing_project.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "billing_project.negotiation.UsualAcceptNegotiation",
    "DEFAULT_PARSER_CLASSES": ["billing_project.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "billing_project.pagination.PagePagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "billing_project.schema.ProblemAutoSchema",
    "EXCEPTION_HANDLER": "billing_project.errors.problem_exception_handler",
    "NUM_PROXIES": NUM_PROXIES,
    "DEFAULT_THROTTLE_RATES": {
        "auth": env.str("THROTTLE_AUTH", default="20/min"),
        "coupon": env.str("THROTTLE_COUPON", default="30/min"),
        "license": env.str("THROTTLE_LICENSE", default="30/min"),
    },
    "COERCE_DECIMAL_TO_STRING": True,
}

SIMPLE_JWT = {
    "SIGNING_KEY": JWT_SECRET,
    "ALGORITHM": "HS256",
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    "UPDATE_LAST_LOGIN": False,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Billing API",
    "DESCRIPTION": (
        "Subscriptions, perpetual licenses, coupons and usage credits.\n\n"
        "**Authentication**: `Authorization: Bearer <token>`, a user's access token from `POST /api/v1/auth/token/` "
        "or a service token (`usage/` endpoints). No credentials: 401; the wrong kind of caller or a missing staff "
        "permission: 403.\n\n"
        "**Errors** are `application/problem+json` (RFC 7807) with a stable `code` to match on (the `ErrorCode` "
        "schema lists them all) and, for invalid fields, `errors` per field. Any request may also get 405, 406, "
        "413 or 415 for a method, `Accept` header, body size or media type the operation does not take.\n\n"
        "**Retries**: every POST takes an `Idempotency-Key` header; see each operation for what it does there. "
        "An answer with `Retry-After` asks you to retry after that many seconds.\n\n"
        "**Lists** are paginated (`page`, `page_size`, or a cursor) and filterable."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "billing_project.schema.add_operation_links",
        "billing_project.schema.add_error_codes",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # One name for the tier choices, wherever a serializer uses them.
    "ENUM_NAME_OVERRIDES": {
        "SubscriptionTierEnum": "billing_project.enums.SubscriptionTier",
        "SubscriptionStatusEnum": "subscriptions.models.SubscriptionStatus",
        "BillingCycleEnum": "billing_project.enums.BillingCycle",
    },
}

CELERY_BROKER_URL = CELERY_BROKER_URL or None
# Without a broker every task runs eagerly in-process, in production mode too (SPEC 5).
CELERY_TASK_ALWAYS_EAGER = CELERY_BROKER_URL is None

# The audit chain (audit.services): rows are written unsealed and sealed by the beat job below. With
# no broker there is no beat, so each row is sealed as it is written (under the chain head's lock).
AUDIT_SEAL_ON_WRITE = env.bool("AUDIT_SEAL_ON_WRITE", default=CELERY_TASK_ALWAYS_EAGER)
AUDIT_SEAL_INTERVAL_SECONDS = env.int("AUDIT_SEAL_INTERVAL_SECONDS", default=5)
AUDIT_SEAL_BATCH_SIZE = 500
# How long a row written during a request waits for its response's status before it is sealed without.
AUDIT_STATUS_WAIT_SECONDS = 30
# verify_audit_chain reports committed rows still unsealed after this long (the sealer is not running).
AUDIT_UNSEALED_ALERT_SECONDS = env.int("AUDIT_UNSEALED_ALERT_SECONDS", default=300)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The periodic jobs' outcomes are kept (django-celery-results) for the console: when a job last ran, how it
# ended. Other tasks (an e-mail) keep none, and neither does the audit sealer, which runs every few seconds
# and whose work is the chain itself (CELERY_TASK_ANNOTATIONS, below the schedule).
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = timedelta(days=env.int("CELERY_RESULT_EXPIRES_DAYS", default=7))
CELERY_TIMEZONE = TIME_ZONE
# Schedules live in the database, editable in the console (django-celery-beat). The jobs below are
# the code's default: missing ones are added at `seed_schedules` and at beat's start, while the
# ones staff edited keep their edits (billing_project.schedules). The file scheduler,
# `billing_project.schedules:FileScheduler`, reads them from here only and keeps its state file under
# RUNTIME_DIR, never in the checkout.
CELERY_BEAT_SCHEDULER = env.str(
    "CELERY_BEAT_SCHEDULER", default="billing_project.schedules:CodeDefaultsDatabaseScheduler"
)
RUNTIME_DIR = Path(env.str("RUNTIME_DIR", default=str(Path(tempfile.gettempdir()) / "billing")))
CELERY_BEAT_SCHEDULE_FILENAME = str(RUNTIME_DIR / "celerybeat-schedule")
# Each job's last run is written when it is sent, so the console shows it at once.
CELERY_BEAT_SYNC_EVERY = 1
CELERY_BEAT_SCHEDULE = {
    "seal-audit-chain": {
        "task": "audit.tasks.seal_audit_chain",
        "schedule": timedelta(seconds=AUDIT_SEAL_INTERVAL_SECONDS),
    },
    "purge-idempotency-keys": {
        "task": "billing_project.tasks.purge_idempotency_keys",
        "schedule": timedelta(hours=1),
    },
    "expire-credit-holds": {"task": "credits.tasks.expire_credit_holds", "schedule": timedelta(minutes=1)},
    "deliver-webhooks": {"task": "billing_project.tasks.webhook_deliveries_send_due", "schedule": timedelta(minutes=1)},
    "expire-credits": {"task": "credits.tasks.expire_credits", "schedule": timedelta(minutes=15)},
    "rollup-usage": {"task": "credits.tasks.rollup_usage_daily", "schedule": crontab(hour=0, minute=30)},
    "allocate-monthly-credits": {
        "task": "subscriptions.tasks.allocate_monthly_credits",
        "schedule": crontab(hour=0, minute=10),
    },
    "expire-trials": {"task": "subscriptions.tasks.expire_trials", "schedule": timedelta(hours=1)},
    "send-trial-reminders": {"task": "subscriptions.tasks.send_trial_reminders", "schedule": timedelta(hours=1)},
    "run-dunning": {"task": "subscriptions.tasks.run_dunning", "schedule": timedelta(hours=1)},
    "reconcile-payments": {"task": "payments.tasks.reconcile_payments", "schedule": timedelta(minutes=5)},
    "reconcile-stripe": {"task": "subscriptions.tasks.reconcile_stripe", "schedule": crontab(hour=2, minute=40)},
    "snapshot-coupon-analytics": {
        "task": "coupons.tasks.snapshot_coupon_analytics",
        "schedule": crontab(hour=0, minute=20),
    },
    "release-abandoned-coupon-checkouts": {
        "task": "coupons.tasks.release_abandoned_checkouts",
        "schedule": timedelta(hours=1),
    },
}
RESULTS_NOT_KEPT = {"seal-audit-chain"}
CELERY_TASK_ANNOTATIONS = {
    entry["task"]: {"ignore_result": False}
    for name, entry in CELERY_BEAT_SCHEDULE.items()
    if name not in RESULTS_NOT_KEPT
}

# The console's CSV exports (audit.admin_export) need the model's view permission.
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"

CORS_ALLOW_CREDENTIALS = False

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if NUM_PROXIES:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^health", r"^metrics$"]
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# One JSON object per line in production (LOG_FORMAT=json, the default when DEBUG is off), plain text in dev.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain" if DEBUG else "json")
if LOG_FORMAT not in ("json", "plain"):
    raise ValueError(f"LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s"},
        "json": {"()": "billing_project.observability.JsonFormatter"},
    },
    "filters": {
        "request_id": {"()": "billing_project.observability.RequestIdFilter"},
        "mask_license_keys": {"()": "audit.logging.MaskLicenseKeys"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "mask_license_keys"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}
