"""Changes to vendor prices and margins: each one audited and written to MarginAuditLog, and each
makes every process reload its pricing book (see credits.apps)."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_model_change, snapshot
from billing_project.errors import Conflict, DomainError, Forbidden, NotFound, RuleViolation
from billing_project.money import exact, quantize_half_up
from billing_project.parsers import text_problem
from credits import catalog
from credits.codes import ErrorCode
from credits.models import (
    PER_1K_PRICE_FIELDS,
    ApprovalStatus,
    MarginAuditLog,
    MarginChange,
    ModelProviderPricing,
    PricingConfig,
    PricingScope,
    Provider,
    ServiceTier,
    VendorName,
)
from credits.selectors import model_price_history, pricing_book
from credits.usage_objects import COMPONENTS, FEE_NAME_LENGTH

# Prices are stored with 16 decimals per 1,000 tokens (1e-19 USD per token); compared at that precision.
STORED_PRICE = Decimal("1e-16")
PRICED_SERVICE_TIERS = tuple(tier for tier in ServiceTier.values if tier != ServiceTier.STANDARD)


def price_stored(value: Decimal | None) -> Decimal | None:
    """A price as the database keeps it (half-up to STORED_PRICE)."""
    return None if value is None else quantize_half_up(value, STORED_PRICE)


def _price_text(value, *, where: str) -> str:
    try:
        number = Decimal(str(value))
    except InvalidOperation as error:
        raise _invalid(where, f"'{value}' is not a number") from error
    if not number.is_finite() or number < 0:
        raise _invalid(where, "a price is a number of at least 0")
    return format(price_stored(number).normalize(), "f")


def _invalid(where: str, why: str) -> RuleViolation:
    return RuleViolation(f"{where}: {why}.", code=ErrorCode.INVALID_PRICE, extra={"field": where})


def _component_prices(prices, *, where: str) -> dict[str, str]:
    if not isinstance(prices, dict):
        raise _invalid(where, "expected {component: price}")
    unknown = set(prices) - set(COMPONENTS)
    if unknown:
        raise _invalid(where, f"unknown components {sorted(unknown)}; known: {list(COMPONENTS)}")
    return {name: _price_text(value, where=f"{where}.{name}") for name, value in sorted(prices.items())}


def _context_tiers_normalized(tiers, *, where: str) -> list[dict]:
    if not isinstance(tiers, list):
        raise _invalid(where, "expected a list of {above_tokens, prices}")
    normalized = []
    for index, tier in enumerate(tiers):
        above = tier.get("above_tokens") if isinstance(tier, dict) else None
        if isinstance(above, bool) or not isinstance(above, int) or above <= 0:
            raise _invalid(f"{where}.{index}.above_tokens", "a positive whole number of tokens")
        normalized.append(
            {"above_tokens": above, "prices": _component_prices(tier.get("prices"), where=f"{where}.{index}.prices")}
        )
    thresholds = [tier["above_tokens"] for tier in normalized]
    if len(set(thresholds)) != len(thresholds):
        raise _invalid(where, "two tiers have the same threshold")
    return sorted(normalized, key=lambda tier: tier["above_tokens"])


def price_book_normalized(*, context_tiers=None, service_tiers=None, request_fees=None) -> dict:
    """The JSON dimensions of a price, checked and written the one way they are stored and compared."""
    service_tiers = service_tiers or {}
    if not isinstance(service_tiers, dict) or set(service_tiers) - set(PRICED_SERVICE_TIERS):
        raise _invalid("service_tiers", f"expected an object keyed by {list(PRICED_SERVICE_TIERS)}")
    request_fees = request_fees or {}
    if not isinstance(request_fees, dict):
        raise _invalid("request_fees", "expected {fee: USD per unit}")
    for name in request_fees:
        if not 0 < len(name) <= FEE_NAME_LENGTH:
            raise _invalid("request_fees", f"a fee name has 1 to {FEE_NAME_LENGTH} characters")
        if text_problem(name):
            raise _invalid("request_fees", "a fee name may hold neither NUL characters nor unpaired surrogates")
    services = {}
    for tier, spec in sorted(service_tiers.items()):
        if not isinstance(spec, dict):
            raise _invalid(f"service_tiers.{tier}", "expected {prices, context_tiers}")
        services[tier] = {
            "prices": _component_prices(spec.get("prices", {}), where=f"service_tiers.{tier}.prices"),
            "context_tiers": _context_tiers_normalized(
                spec.get("context_tiers", []), where=f"service_tiers.{tier}.context_tiers"
            ),
        }
    return {
        "context_tiers": _context_tiers_normalized(context_tiers or [], where="context_tiers"),
        "service_tiers": services,
        "request_fees": {
            name: _price_text(value, where=f"request_fees.{name}") for name, value in sorted(request_fees.items())
        },
    }


@transaction.atomic
def provider_create(
    *, actor, name: str, api_type: str, display_name: str = "", is_enabled: bool = True, vendor_family: str = ""
) -> Provider:
    provider = Provider.objects.create(
        name=name,
        api_type=api_type,
        display_name=display_name or name,
        is_enabled=is_enabled,
        vendor_family=vendor_family or name,
    )
    audit_model_change(action=AuditAction.CREATE, instance=provider, actor=actor)
    return provider


@transaction.atomic
def provider_update(*, provider_id, actor, **changes) -> Provider:
    """Changes a provider's display name, type or whether it may be used; its name is its identity."""
    provider = Provider.objects.select_for_update().filter(pk=provider_id).first()
    if provider is None:
        raise NotFound("No such provider.", code=ErrorCode.UNKNOWN_PROVIDER)
    previous = snapshot(provider)
    for name, value in changes.items():
        setattr(provider, name, value)
    provider.save(update_fields=[*changes, "updated_at"])
    audit_model_change(action=AuditAction.UPDATE, instance=provider, previous_value=previous, actor=actor)
    return provider


PERCENT_LIMIT = Decimal("1e7")  # what price_change_percent_* can hold


def _percent_change(old: Decimal | None, new: Decimal) -> Decimal | None:
    """The change in percent, or None when there is no old price or the change is too large to show."""
    if not old:
        return None
    percent = quantize_half_up(exact(new - old) / exact(old) * 100, Decimal("0.01"))
    return percent if abs(percent) < PERCENT_LIMIT else None


@dataclass(frozen=True)
class PriceChange:
    price: ModelProviderPricing
    created: bool


def price_start_check(*, latest: ModelProviderPricing | None, effective_from: datetime) -> None:
    """A model's history only grows forward: a new price starts after its latest one."""
    if latest is not None and latest.effective_from >= effective_from:
        raise Conflict(
            f"A price of {latest.provider.name}/{latest.model_name} must start after its latest price "
            f"({latest.effective_from.isoformat()}).",
            code=ErrorCode.PRICE_HISTORY_CONFLICT,
            extra={"latest_effective_from": latest.effective_from.isoformat(), "model_name": latest.model_name},
        )


@transaction.atomic
def model_price_create(
    *,
    provider: Provider,
    model_name: str,
    input_price_per_1k: Decimal,
    output_price_per_1k: Decimal,
    cache_input_price_per_1k: Decimal | None = None,
    cache_hit_price_per_1k: Decimal | None = None,
    cache_write_1h_price_per_1k: Decimal | None = None,
    reasoning_price_per_1k: Decimal | None = None,
    audio_input_price_per_1k: Decimal | None = None,
    audio_output_price_per_1k: Decimal | None = None,
    image_output_price_per_1k: Decimal | None = None,
    context_tiers: list | None = None,
    service_tiers: dict | None = None,
    request_fees: dict | None = None,
    region: str = "",
    effective_from: datetime | None = None,
    vendor_model_id: str = "",
    description: str = "",
    actor=None,
) -> PriceChange:
    """Appends a price to a model's history (per region): the price in force until now ends where
    this one starts. A price equal, at stored precision, to the one in force changes nothing (imports
    are idempotent)."""
    now = timezone.now()
    effective_from = effective_from or now
    given = {
        "input_price_per_1k": input_price_per_1k,
        "output_price_per_1k": output_price_per_1k,
        "cache_input_price_per_1k": cache_input_price_per_1k,
        "cache_hit_price_per_1k": cache_hit_price_per_1k,
        "cache_write_1h_price_per_1k": cache_write_1h_price_per_1k,
        "reasoning_price_per_1k": reasoning_price_per_1k,
        "audio_input_price_per_1k": audio_input_price_per_1k,
        "audio_output_price_per_1k": audio_output_price_per_1k,
        "image_output_price_per_1k": image_output_price_per_1k,
    }
    for name, value in given.items():
        if value is not None and value < 0:
            raise _invalid(name, "a price is a number of at least 0")
    new_prices = {name: price_stored(value) for name, value in given.items()}
    new_book = price_book_normalized(
        context_tiers=context_tiers, service_tiers=service_tiers, request_fees=request_fees
    )
    # Price changes of one model are serialized by locking its history.
    history = list(model_price_history(provider=provider, model_name=model_name, region=region).select_for_update())
    latest = history[-1] if history else None
    if latest is not None:
        if all(getattr(latest, name) == value for name, value in new_prices.items()) and all(
            getattr(latest, name) == value for name, value in new_book.items()
        ):
            return PriceChange(price=latest, created=False)
        price_start_check(latest=latest, effective_from=effective_from)
        if latest.effective_until is None or latest.effective_until > effective_from:
            previous = snapshot(latest)
            latest.effective_until = effective_from
            latest.save(update_fields=["effective_until", "updated_at"])
            audit_model_change(action=AuditAction.UPDATE, instance=latest, previous_value=previous, actor=actor)
    try:
        with transaction.atomic():
            price = ModelProviderPricing.objects.create(
                provider=provider,
                model_name=model_name,
                region=region,
                vendor_model_id=vendor_model_id,
                effective_from=effective_from,
                description=description,
                previous_price_input=latest.input_price_per_1k if latest else None,
                previous_price_output=latest.output_price_per_1k if latest else None,
                price_change_percent_input=_percent_change(
                    latest and latest.input_price_per_1k, new_prices["input_price_per_1k"]
                ),
                price_change_percent_output=_percent_change(
                    latest and latest.output_price_per_1k, new_prices["output_price_per_1k"]
                ),
                detected_at=now if latest else None,
                **new_prices,
                **new_book,
            )
    except IntegrityError as error:
        raise Conflict(
            f"A price of {provider.name}/{model_name} already starts at that time.",
            code=ErrorCode.PRICE_EXISTS,
            extra={"model_name": model_name},
        ) from error
    MarginAuditLog.objects.create(
        change_type=MarginChange.CREATED,
        changed_by=actor,
        reason=description or "Vendor price change",
        scope={
            "model_price_id": str(price.pk),
            "provider": provider.name,
            "model_name": model_name,
            "region": region,
            "previous": {name: str(getattr(latest, name)) for name in PER_1K_PRICE_FIELDS} if latest else None,
            "new": {name: str(value) for name, value in new_prices.items()} | new_book,
        },
    )
    audit_model_change(action=AuditAction.CREATE, instance=price, actor=actor)
    return PriceChange(price=price, created=True)


def _scope_fields(config: PricingConfig) -> dict:
    return {
        "scope_type": config.scope_type,
        "subscription_tier": config.subscription_tier,
        "provider": config.provider.name if config.provider_id else "",
        "model_name": config.model_name,
    }


SCOPE_REQUIREMENTS = {
    PricingScope.TIER: {"subscription_tier"},
    PricingScope.PROVIDER: {"provider"},
    PricingScope.MODEL: {"model_name"},
    PricingScope.COMBINATION: {"subscription_tier", "provider", "model_name"},
}
SCOPE_ALLOWED = {**SCOPE_REQUIREMENTS, PricingScope.MODEL: {"model_name", "provider"}}


def _check_scope(scope_type: str, given: dict) -> None:
    present = {name for name, value in given.items() if value}
    missing = SCOPE_REQUIREMENTS[scope_type] - present
    extra = present - SCOPE_ALLOWED[scope_type]
    if missing or extra:
        raise RuleViolation(
            f"A '{scope_type}' margin needs {sorted(SCOPE_REQUIREMENTS[scope_type])} and nothing else.",
            code=ErrorCode.INVALID_SCOPE,
            extra={"missing": sorted(missing), "unexpected": sorted(extra)},
        )


@transaction.atomic
def pricing_config_create(
    *,
    actor,
    scope_type: str,
    margin_multiplier: Decimal,
    reason: str,
    subscription_tier: str = "",
    provider: Provider | None = None,
    model_name: str = "",
    effective_from: datetime | None = None,
    effective_until: datetime | None = None,
    reason_details: str = "",
) -> PricingConfig:
    """Proposes a margin for a scope. It counts only once someone other than its creator approves it."""
    _check_scope(scope_type, {"subscription_tier": subscription_tier, "provider": provider, "model_name": model_name})
    if margin_multiplier <= 0:
        raise RuleViolation("A margin multiplier must be positive.", code=ErrorCode.INVALID_MULTIPLIER)
    effective_from = effective_from or timezone.now()
    if effective_until is not None and effective_until <= effective_from:
        raise RuleViolation("The end must come after the start.", code=ErrorCode.INVALID_PERIOD)
    previous = pricing_book().margin_at(
        tier=subscription_tier,
        provider=provider.name if provider else "",
        model_name=model_name,
        moment=effective_from,
        default=None,
    )
    config = PricingConfig.objects.create(
        scope_type=scope_type,
        subscription_tier=subscription_tier,
        provider=provider,
        model_name=model_name,
        margin_multiplier=margin_multiplier,
        effective_from=effective_from,
        effective_until=effective_until,
        reason=reason,
        reason_details=reason_details,
        previous_multiplier=previous,
        change_percent=_percent_change(previous, margin_multiplier),
        created_by=actor,
        approval_status=ApprovalStatus.PENDING,
    )
    MarginAuditLog.objects.create(
        pricing_config=config,
        change_type=MarginChange.CREATED,
        changed_by=actor,
        old_multiplier=previous,
        new_multiplier=margin_multiplier,
        reason=reason_details or reason,
        scope=_scope_fields(config),
    )
    audit_model_change(action=AuditAction.CREATE, instance=config, actor=actor)
    return config


def _pending_config_locked(config_id) -> PricingConfig:
    config = (
        PricingConfig.objects.select_for_update(of=("self",)).select_related("provider").filter(pk=config_id).first()
    )
    if config is None:
        raise RuleViolation("No such pricing change.", code=ErrorCode.UNKNOWN_PRICING_CONFIG)
    if config.approval_status != ApprovalStatus.PENDING:
        raise Conflict(f"This change is already {config.approval_status}.", code=ErrorCode.NOT_PENDING)
    return config


@transaction.atomic
def pricing_config_approve(*, config_id, actor) -> PricingConfig:
    """Puts a proposed margin in force. Its creator may not approve it (four eyes)."""
    config = _pending_config_locked(config_id)
    if config.created_by_id is not None and config.created_by_id == actor.pk:
        raise Forbidden("You cannot approve a pricing change you made.", code=ErrorCode.SELF_APPROVAL)
    previous = snapshot(config)
    config.approval_status = ApprovalStatus.APPROVED
    config.approved_by = actor
    config.approved_at = timezone.now()
    config.save(update_fields=["approval_status", "approved_by", "approved_at", "updated_at"])
    MarginAuditLog.objects.create(
        pricing_config=config,
        change_type=MarginChange.APPROVED,
        changed_by=actor,
        old_multiplier=config.previous_multiplier,
        new_multiplier=config.margin_multiplier,
        reason=config.reason_details or config.reason,
        scope=_scope_fields(config),
    )
    audit_model_change(action=AuditAction.APPROVE, instance=config, previous_value=previous, actor=actor)
    return config


@transaction.atomic
def pricing_config_reject(*, config_id, actor, reason: str = "") -> PricingConfig:
    config = _pending_config_locked(config_id)
    previous = snapshot(config)
    config.approval_status = ApprovalStatus.REJECTED
    config.save(update_fields=["approval_status", "updated_at"])
    MarginAuditLog.objects.create(
        pricing_config=config,
        change_type=MarginChange.REJECTED,
        changed_by=actor,
        old_multiplier=config.previous_multiplier,
        new_multiplier=config.margin_multiplier,
        reason=reason,
        scope=_scope_fields(config),
    )
    audit_model_change(action=AuditAction.REJECT, instance=config, previous_value=previous, actor=actor)
    return config


SEED_EFFECTIVE_FROM = datetime(2024, 1, 1, tzinfo=UTC)


@transaction.atomic
def pricing_catalog_seed() -> dict[str, int]:
    """Loads the providers, vendor prices and approved tier margins of credits.catalog.

    Idempotent: rows that exist are left as they are (staff may have edited them).
    """
    created = {"providers": 0, "model_prices": 0, "tier_margins": 0}
    providers = {}
    for spec in catalog.PROVIDERS:
        provider, was_created = Provider.objects.get_or_create(
            name=spec["name"], defaults={"display_name": spec["display_name"], "api_type": spec["api_type"]}
        )
        providers[provider.name] = provider
        created["providers"] += was_created
    for spec in catalog.MODEL_PRICES:
        _, was_created = ModelProviderPricing.objects.get_or_create(
            provider=providers[spec["provider"]],
            model_name=spec["model_name"],
            effective_from=SEED_EFFECTIVE_FROM,
            defaults={
                "input_price_per_1k": Decimal(spec["input"]),
                "output_price_per_1k": Decimal(spec["output"]),
                "cache_input_price_per_1k": Decimal(spec["cache_input"]) if "cache_input" in spec else None,
                "cache_hit_price_per_1k": Decimal(spec["cache_hit"]) if "cache_hit" in spec else None,
                "description": "Catalog seed",
            },
        )
        created["model_prices"] += was_created
    for tier, multiplier in catalog.TIER_MARGINS.items():
        if PricingConfig.objects.filter(scope_type=PricingScope.TIER, subscription_tier=tier).exists():
            continue
        config = PricingConfig.objects.create(
            scope_type=PricingScope.TIER,
            subscription_tier=tier,
            margin_multiplier=multiplier,
            effective_from=SEED_EFFECTIVE_FROM,
            reason="catalog_seed",
            approval_status=ApprovalStatus.APPROVED,
            approved_at=timezone.now(),
            requires_approval=False,
        )
        MarginAuditLog.objects.create(
            pricing_config=config,
            change_type=MarginChange.CREATED,
            new_multiplier=multiplier,
            reason="Catalog seed",
            scope={"scope_type": PricingScope.TIER, "subscription_tier": tier},
        )
        created["tier_margins"] += 1
    return created


@dataclass(frozen=True)
class ImportedRow:
    """What became of one row of a price file: `imported`, `unchanged` or `refused` (with why)."""

    row: object
    result: str
    reason: str = ""


@dataclass
class ImportSummary:
    created: int = 0
    unchanged: int = 0
    providers_created: int = 0
    rows: list[ImportedRow] = field(default_factory=list)

    @property
    def refused(self) -> list[ImportedRow]:
        return [imported for imported in self.rows if imported.result == "refused"]


def _import_provider(row, *, actor, summary: ImportSummary) -> Provider:
    provider = Provider.objects.filter(name=row.provider).first()
    family = row.vendor_family or row.provider
    if provider is None:
        api_type = row.provider if row.provider in VendorName.values else VendorName.OTHER
        provider = provider_create(actor=actor, name=row.provider, api_type=api_type, vendor_family=family)
        summary.providers_created += 1
    elif not provider.vendor_family and row.vendor_family:
        provider = provider_update(provider_id=provider.pk, actor=actor, vendor_family=family)
    return provider


@transaction.atomic
def model_prices_import(
    *, rows, effective_from: datetime | None = None, dry_run: bool = False, actor=None, progress=lambda rows: rows
) -> ImportSummary:
    """Imports the rows of a price file (credits.price_files) whole or not at all: each row in a
    savepoint, so every refusal is found and named, and any refusal (or a dry run) rolls the whole
    file back. A provider we do not know yet is added."""
    summary = ImportSummary()
    for row in progress(rows):
        try:
            with transaction.atomic():
                change = _price_import_row(row=row, actor=actor, effective_from=effective_from, summary=summary)
        except DomainError as refusal:
            summary.rows.append(ImportedRow(row, "refused", reason=f"{refusal.code}: {refusal.detail}"))
            continue
        summary.rows.append(ImportedRow(row, "imported" if change.created else "unchanged"))
    if dry_run or summary.refused:
        transaction.set_rollback(True)
    return summary


def _price_import_row(*, row, actor, effective_from: datetime | None, summary: ImportSummary) -> PriceChange:
    provider = _import_provider(row, actor=actor, summary=summary)
    change = model_price_create(
        provider=provider,
        model_name=row.model_name,
        region=row.region,
        effective_from=row.effective_from or effective_from,
        description="Imported price list",
        actor=actor,
        **row.prices,
    )
    if change.created:
        summary.created += 1
    else:
        summary.unchanged += 1
    return change
