"""Production safety checks.

Registered as ordinary system checks, so every manage.py command (and `check --deploy`) lists them;
the WSGI entry point runs the same list and refuses to start. Only active with DEBUG off.
"""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.module_loading import import_string

MIN_SECRET_LENGTH = 32
PLACEHOLDER_MARKERS = (
    "placeholder",
    "changeme",
    "change-me",
    "change_me",
    "xxxx",
    "your_",
    "dummy",
    "example",
    "replace",
)


def _looks_like_placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def production_problems() -> list[str]:
    """Every reason the current settings are unsafe for production, all at once."""
    if settings.DEBUG:
        return []
    problems = []
    previous = settings.SERVICE_JWT_PREVIOUS_SECRET
    secret_names = ["SECRET_KEY", "JWT_SECRET", "SERVICE_JWT_SECRET"]
    if previous:
        # optional, but while set it still verifies tokens: the same bar applies
        secret_names.append("SERVICE_JWT_PREVIOUS_SECRET")
    for name in secret_names:
        value = getattr(settings, name)
        if len(value) < MIN_SECRET_LENGTH:
            problems.append(f"{name} must be at least {MIN_SECRET_LENGTH} characters long.")
        elif value in (settings.DEV_SECRET_KEY, settings.DEV_SERVICE_JWT_SECRET) or _looks_like_placeholder(value):
            problems.append(f"{name} is a development default or placeholder.")
    if settings.JWT_SECRET == settings.SECRET_KEY:
        problems.append("JWT_SECRET must be set, and differ from SECRET_KEY.")
    if settings.SERVICE_JWT_SECRET in (settings.JWT_SECRET, settings.SECRET_KEY):
        problems.append("SERVICE_JWT_SECRET must differ from SECRET_KEY and JWT_SECRET.")
    if previous and previous in (settings.SERVICE_JWT_SECRET, settings.JWT_SECRET, settings.SECRET_KEY):
        problems.append("SERVICE_JWT_PREVIOUS_SECRET must differ from SERVICE_JWT_SECRET, JWT_SECRET and SECRET_KEY.")
    if not settings.DATABASE_URL:
        problems.append("DATABASE_URL is missing (production needs PostgreSQL).")
    if not settings.ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS is missing.")
    if settings.NUM_PROXIES and not settings.TRUSTED_PROXIES:
        problems.append("NUM_PROXIES is set but TRUSTED_PROXIES is empty: name the proxies' addresses or networks.")
    problems.extend(_payment_problems())
    return problems


def _payment_problems() -> list[str]:
    """The offline provider marks every checkout paid: in production it runs only when named."""
    provider = settings.PAYMENTS_PROVIDER
    stripe_key, webhook_secret = settings.STRIPE_SECRET_KEY, settings.STRIPE_WEBHOOK_SECRET
    problems = []
    if provider not in ("", "stripe", "offline"):
        problems.append(f"PAYMENTS_PROVIDER must be stripe or offline, not {provider!r}.")
    if provider == "offline":
        return problems
    if not stripe_key:
        problems.append(
            "STRIPE_SECRET_KEY is missing: set it (with STRIPE_WEBHOOK_SECRET), or set PAYMENTS_PROVIDER=offline "
            "to run without payments (every checkout is then marked paid)."
        )
    elif _looks_like_placeholder(stripe_key) or not stripe_key.startswith(("sk_", "rk_")):
        problems.append("STRIPE_SECRET_KEY is a placeholder, not a Stripe secret key.")
    if not webhook_secret:
        problems.append("STRIPE_WEBHOOK_SECRET is missing: Stripe's events could not be verified.")
    elif _looks_like_placeholder(webhook_secret) or not webhook_secret.startswith("whsec_"):
        problems.append("STRIPE_WEBHOOK_SECRET is a placeholder, not a Stripe webhook secret.")
    return problems


@checks.register(checks.Tags.security)
def check_production_settings(app_configs, **kwargs):
    return [checks.Error(problem, id="billing.E001") for problem in production_problems()]


def refuse_unsafe_production_start() -> None:
    problems = production_problems()
    if problems:
        raise ImproperlyConfigured("Refusing to start in production mode:\n- " + "\n- ".join(problems))


@checks.register(checks.Tags.security, deploy=True)
def check_csrf_middleware(app_configs, **kwargs):
    """Django's own check (security.W003, silenced in the settings) looks for its CSRF middleware by
    its exact name; here it is `ConsoleCsrfViewMiddleware`, a subclass confined to the console (the
    only place a cookie authenticates anyone). This one accepts any subclass, and still warns
    without one."""
    if any(issubclass(import_string(path), CsrfViewMiddleware) for path in settings.MIDDLEWARE):
        return []
    return [
        checks.Warning(
            "No CSRF middleware in MIDDLEWARE: the console's forms are not protected against cross-site requests.",
            id="billing.W001",
        )
    ]
