"""Recording LLM usage against credits, and reservations (holds) for streaming calls.

A request's events are grouped by user, and the users recorded in groups of about five hundred
events (BATCH_GROUP_EVENTS), each group in one transaction with its users' balance rows locked
together: a group over many users costs the handful of round trips of one event (the reads under the
locks in one, the writes in one), and a group passes over the balances a concurrent batch holds
(`usage_record_batch`). The single-event endpoint is simply a batch of one. Every refusal leaves
nothing written for that event.
"""

import contextlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import NamedTuple
from uuid import UUID, uuid4

from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.utils import timezone

from billing_project import sql
from billing_project.errors import Conflict, DomainError, NotFound, PaymentRequired, RuleViolation
from billing_project.metrics import CREDITS_DEDUCTED, USAGE_RECORDING_ATTEMPTS
from billing_project.money import quantize_half_up
from billing_project.transactions import conflict_retrying
from credits import ledger_sql, pricing
from credits.codes import ErrorCode
from credits.models import (
    CreditHold,
    DeductionReason,
    HoldStatus,
    RequestType,
    ServiceTier,
    TokenUsageLedger,
    UsageFormat,
    UsageStatus,
)
from credits.selectors import pricing_book
from credits.services.accounts import LockedAccount, accounts_flush
from credits.usage_objects import TokenBreakdown
from licensing.selectors import LicenseUse, license_use_statement, license_uses_of

COST_PLACES = Decimal("1e-10")
MULTIPLIER_PLACES = Decimal("1e-4")
MILLISECOND = timedelta(milliseconds=1)
# A batch is recorded in transactions of about this many events, each group's locks held only until
# its commit: a concurrent batch or single record waits for one group at most, and a batch of the
# largest size (MAX_BATCH, 1,000) is two groups. A smaller group pays more round trips and commits,
# and its worker waits idle for each commit's WAL flush: 1,000-event batches over 200 users went
# over a quarter faster at 500 than at 100, and a group of the whole batch was slower again, the two
# workers' batches waiting for each other's whole batch. A single record meeting a group waits
# longer for it in turn (bench/RESULTS.md, `batch_cpu.py --singles`).
BATCH_GROUP_EVENTS = 500


class UsageEvent(NamedTuple):
    """One LLM request as the gateway reports it, its tokens already in the canonical breakdown.
    Immutable as a named tuple, which is made in a third of a frozen dataclass's time: a batch
    makes a thousand."""

    request_id: UUID
    user_id: int
    provider: str
    model: str
    tokens: TokenBreakdown
    request_type: str
    request_started_at: datetime
    request_completed_at: datetime
    usage_format: str = UsageFormat.FLAT
    service_tier: str = ServiceTier.STANDARD
    fee_units: Mapping[str, int] = MappingProxyType({})
    hold_id: UUID | None = None
    streaming_segments: int | None = None
    region: str = ""


class UsageResult(NamedTuple):
    """201 for a new record, 200 for a repeat of a request_id already recorded."""

    status_code: int
    usage: TokenUsageLedger

    @property
    def body(self) -> dict:
        # The ids stay UUIDs: the API's renderer writes them as their text (str() was a microsecond each).
        usage = self.usage
        return {
            "request_id": usage.request_id,
            "status": usage.status,
            "credits_deducted": usage.credits_deducted,
            "balance_after": usage.balance_after,
            "vendor_cost": f"{usage.vendor_cost:.10f}",
            "credit_value_usd": f"{usage.credit_value_usd:.10f}",
            "margin_multiplier": f"{usage.margin_multiplier:.4f}",
            "byok": usage.is_byok,
            "hold_id": usage.hold_id,
            "deduction_id": usage.deduction_id,
        }


Outcome = UsageResult | DomainError


def insufficient_credits(*, needed: int, balance: int, available: int) -> PaymentRequired:
    return PaymentRequired(
        f"This needs {needed} credits; {available} are available.",
        code=ErrorCode.INSUFFICIENT_CREDITS,
        extra={"required": needed, "balance": balance, "available": available},
    )


def budget_exceeded(*, needed: int, budget_available: int) -> PaymentRequired:
    return PaymentRequired(
        f"This needs {needed} credits; the monthly budget allows {budget_available} more.",
        code=ErrorCode.BUDGET_EXCEEDED,
        extra={"required": needed, "budget_available": budget_available},
    )


class _UserSession:
    """Records one user's events through their locked account; collects rows, written at the end."""

    def __init__(
        self,
        *,
        account: LockedAccount | None,
        recorded: dict[UUID, TokenUsageLedger],
        holds: dict[UUID, CreditHold],
        license_use: LicenseUse,
        book,
    ):
        self.account = account
        self.recorded = recorded
        self.holds = holds
        self.byok = license_use.byok
        if account is not None:
            self.user_id = account.user_id
            self.tier = pricing.pricing_tier(
                tier=account.balance.tier, licensed_without_byok=license_use.licensed_without_byok
            )
            self.subscription_id = account.balance.subscription_id
        self.book = book
        self.records_anything = False

    @classmethod
    def open_many(
        cls, *, events_by_user: dict[int, list[UsageEvent]], now: datetime, skip_locked: bool
    ) -> "dict[int, _UserSession]":
        """The sessions of those users who have a balance row (with `skip_locked`, not held by
        another transaction), by user id. Everything a price and a refusal depend on is read under
        the locks, in one round trip: the accounts (a balance row carries the tier), the request
        ids, the licenses. The request ids are checked under the lock: a concurrent duplicate has
        either committed (found here) or waits."""
        events = [event for user_events in events_by_user.values() for event in user_events]
        accounts, (recorded, license_uses) = LockedAccount.open_many_reading(
            user_ids=list(events_by_user),
            now=now,
            skip_locked=skip_locked,
            reads=[
                ledger_sql.request_ids_statement([event.request_id for event in events]),
                license_use_statement(user_ids=list(events_by_user)),
            ],
        )
        return cls._sessions(accounts, recorded, license_uses, events)

    @classmethod
    def open(cls, *, user_id: int, events: list[UsageEvent], now: datetime) -> "_UserSession":
        """The session of one user, their balance row created on first use (`account` is None for
        an unknown user)."""
        opened = LockedAccount.open_reading(
            user_id=user_id,
            now=now,
            reads=[
                ledger_sql.request_ids_statement([event.request_id for event in events]),
                license_use_statement(user_ids=[user_id]),
            ],
        )
        if opened is None:
            return cls(account=None, recorded={}, holds={}, license_use=LicenseUse(), book=None)
        account, (recorded, license_uses) = opened
        return cls._sessions({user_id: account}, recorded, license_uses, events)[user_id]

    @classmethod
    def _sessions(cls, accounts, recorded, license_uses, events) -> "dict[int, _UserSession]":
        recorded_ids = ledger_sql.request_ids_of(recorded)
        recorded_rows = (
            {row.request_id: row for row in TokenUsageLedger.objects.filter(request_id__in=recorded_ids)}
            if recorded_ids
            else {}
        )
        hold_ids = [event.hold_id for event in events if event.hold_id]
        holds = {hold.hold_id: hold for hold in CreditHold.objects.filter(hold_id__in=hold_ids)} if hold_ids else {}
        uses, book = license_uses_of(license_uses), pricing_book()
        return {
            user_id: cls(
                account=account,
                recorded=recorded_rows,
                holds=holds,
                license_use=uses.get(user_id, LicenseUse()),
                book=book,
            )
            for user_id, account in accounts.items()
        }

    def record(self, event: UsageEvent) -> UsageResult:
        if self.account is None:
            raise RuleViolation(f"No user with id {event.user_id}.", code=ErrorCode.UNKNOWN_USER)
        done = self.recorded.get(event.request_id)
        if done is not None:
            if done.user_id != self.user_id:
                raise Conflict("This request_id was recorded for another user.", code=ErrorCode.REQUEST_ID_CONFLICT)
            self._hold_free_on_repeat(event)
            return UsageResult(status_code=200, usage=done)
        quote = self._quote(event)
        hold = self._hold_of(event)
        account = self.account
        if hold is not None:
            freed = hold.amount if account.hold_is_live(hold) else 0
            # The call has happened: take what the hold and balance (and a hard budget) cover, never more.
            charged = min(quote.credits, max(account.spendable - account.held + freed, 0))
            if (budget_available := account.budget_available(freed=freed)) is not None:
                charged = min(charged, budget_available)
            account.capture(hold, charged=charged, request_id=event.request_id)
        elif quote.credits > account.available:
            raise insufficient_credits(
                needed=quote.credits, balance=account.balance.amount, available=account.available
            )
        elif (budget_available := account.budget_available()) is not None and quote.credits > budget_available:
            raise budget_exceeded(needed=quote.credits, budget_available=budget_available)
        else:
            charged = quote.credits
        vendor_cost = quantize_half_up(quote.vendor_cost, COST_PLACES)
        gross_margin = quantize_half_up(quote.gross_margin_usd, COST_PLACES)
        deduction = None
        if charged:
            deduction = account.debit(
                charged,
                reason=DeductionReason.EMBEDDING
                if event.request_type == RequestType.EMBEDDING
                else DeductionReason.INFERENCE,
                request_id=event.request_id,
                subscription_id=self.subscription_id,
                token_vendor_cost=vendor_cost,
                margin_multiplier=quote.margin_multiplier,
                gross_margin=gross_margin,
            )
        tokens = event.tokens
        usage = sql.new_row(
            TokenUsageLedger,
            request_id=event.request_id,
            user_id=self.user_id,
            subscription_id=self.subscription_id,
            provider_id=self.book.providers[event.provider],
            model_name=event.model,
            pricing_id=quote.price.id if quote.price else None,
            input_tokens=tokens.input_total,
            output_tokens=tokens.output_total,
            cached_input_tokens=tokens.cache_read,
            cache_write_tokens=tokens.cache_write_5m,
            cache_write_1h_tokens=tokens.cache_write_1h,
            audio_input_tokens=tokens.audio_input,
            reasoning_tokens=tokens.reasoning,
            audio_output_tokens=tokens.audio_output,
            image_output_tokens=tokens.image_output,
            total_tokens=tokens.input_total + tokens.output_total,
            usage_format=event.usage_format,
            service_tier=event.service_tier,
            fee_units=dict(event.fee_units),
            vendor_cost=vendor_cost,
            margin_multiplier=quantize_half_up(quote.margin_multiplier, MULTIPLIER_PLACES),
            credit_value_usd=quantize_half_up(quote.credit_value_usd, COST_PLACES),
            credits_deducted=charged,
            balance_after=account.balance.amount,
            gross_margin_usd=gross_margin,
            request_type=event.request_type,
            streaming_segments=event.streaming_segments,
            request_started_at=event.request_started_at,
            request_completed_at=event.request_completed_at,
            processing_time_ms=(event.request_completed_at - event.request_started_at) // MILLISECOND,
            status=UsageStatus.PARTIAL if charged < quote.credits else UsageStatus.SUCCESS,
            is_byok=self.byok,
            user_tier_at_request=self.tier,
            region=event.region,
            hold_id=event.hold_id,
            deduction=deduction,
        )
        account.usage_add(usage)
        self.records_anything = True
        self.recorded[event.request_id] = usage
        return UsageResult(status_code=201, usage=usage)

    def _quote(self, event: UsageEvent) -> pricing.Quote:
        if event.provider not in self.book.providers:
            raise RuleViolation(f"Unknown provider '{event.provider}'.", code=ErrorCode.UNKNOWN_PROVIDER)
        price = self.book.price_at(
            provider=event.provider, model_name=event.model, moment=event.request_started_at, region=event.region
        )
        if price is None:
            raise RuleViolation(
                f"No price for model '{event.model}' of '{event.provider}' at {event.request_started_at.isoformat()}.",
                code=ErrorCode.UNKNOWN_MODEL,
            )
        if self.byok:
            return pricing.byok_quote(price)
        margin = self.book.margin_at(
            tier=self.tier,
            provider=event.provider,
            model_name=event.model,
            moment=event.request_started_at,
            default=settings.DEFAULT_MARGIN_MULTIPLIER,
        )
        try:
            return pricing.quote(
                price=price,
                tokens=event.tokens,
                margin=margin,
                credit_value_usd=settings.CREDIT_VALUE_USD,
                service_tier=event.service_tier,
                fee_units=event.fee_units,
            )
        except pricing.UnpricedFee as unpriced:
            raise RuleViolation(
                f"No price for the fee '{unpriced.fee}' of model '{event.model}' of '{event.provider}'.",
                code=ErrorCode.UNPRICED_FEE,
                extra={"fee": unpriced.fee},
            ) from unpriced

    def _hold_free_on_repeat(self, event: UsageEvent) -> None:
        """A repeat of a recorded request that names a hold still held frees it: the request it was
        reserved for is recorded (a retried call whose first record went without the hold), and
        nothing else may capture it."""
        hold = self.holds.get(event.hold_id) if event.hold_id else None
        if hold is not None and hold.user_id == self.user_id and hold.status == HoldStatus.HELD:
            self.account.release(hold)
            self.records_anything = True

    def _hold_of(self, event: UsageEvent) -> CreditHold | None:
        if event.hold_id is None:
            return None
        hold = self.holds.get(event.hold_id)
        if hold is None or hold.user_id != self.user_id:
            raise RuleViolation("No such hold for this user.", code=ErrorCode.UNKNOWN_HOLD)
        if hold.status == HoldStatus.CAPTURED:
            raise Conflict("This hold has already been captured.", code=ErrorCode.HOLD_ALREADY_CAPTURED)
        return hold

    def record_all(self, events: list[UsageEvent]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for event in events:
            try:
                outcomes.append(self.record(event))
            except DomainError as refusal:
                outcomes.append(refusal)
        return outcomes


@conflict_retrying
def _record_user(user_id: int, events: list[UsageEvent]) -> list[Outcome]:
    """Records one user's events in one transaction; each event gets its own outcome."""
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                session = _UserSession.open(user_id=user_id, events=events, now=timezone.now())
                outcomes = session.record_all(events)
                if session.records_anything:
                    session.account.flush(commit=True)
                else:
                    # Refusals and repeats write nothing at all (SPEC: a 402 writes nothing): not the
                    # expiry rows of overdue grants, nor a balance row created by this first use.
                    transaction.set_rollback(True)
            return outcomes
        except IntegrityError:
            # A request_id recorded at the same moment under another user's lock: the retry sees it.
            if attempt == 2:
                raise
        except DataError:
            # The parser bounds every value, so this is a value the database still cannot hold: the
            # events it came with are recorded alone, and only the one that fails is refused.
            if len(events) == 1:
                return [RuleViolation("The database cannot store this event.", code=ErrorCode.UNRECORDABLE_EVENT)]
            return [outcome for event in events for outcome in _record_user(user_id, [event])]
    raise AssertionError("unreachable")


@conflict_retrying
def _record_users(events_by_user: dict[int, list[UsageEvent]], *, skip_locked: bool) -> dict[int, list[Outcome]]:
    """Records the events of those users who have a balance row in one transaction, their balances
    locked by one statement in ascending user id: the round trips of a single user, however many
    users a batch spans. Users whose events are all refused or repeats write nothing. The users left
    out (first uses, unknown users, and with `skip_locked` those whose balance another transaction
    holds) are the caller's to record."""
    with transaction.atomic():
        sessions = _UserSession.open_many(events_by_user=events_by_user, now=timezone.now(), skip_locked=skip_locked)
        outcomes = {user_id: session.record_all(events_by_user[user_id]) for user_id, session in sessions.items()}
        accounts_flush([session.account for session in sessions.values() if session.records_anything], commit=True)
    return outcomes


def _count(outcomes: list[Outcome]) -> None:
    """The metrics of the outcomes, each counter touched once per result (a metric's increment takes
    a lock and writes its shared file: once per event was a few percent of a batch)."""
    results: Counter[str] = Counter()
    deducted = 0
    for outcome in outcomes:
        if isinstance(outcome, DomainError):
            results[outcome.code] += 1
        elif outcome.status_code == 200:
            results["replayed"] += 1
        else:
            results[outcome.usage.status] += 1
            deducted += outcome.usage.credits_deducted
    for result, count in results.items():
        USAGE_RECORDING_ATTEMPTS.labels(result=result).inc(count)
    if deducted:
        CREDITS_DEDUCTED.inc(deducted)


def usage_record(*, event: UsageEvent) -> UsageResult:
    """Records one request: its cost in credits, the deduction and the usage row, or a refusal
    (402 when credits are short or a hard budget is reached, 422 for an unknown model) with nothing
    written."""
    (outcome,) = _record_user(event.user_id, [event])
    _count([outcome])
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def _user_groups(events_by_user: dict[int, list[UsageEvent]]) -> Iterator[dict[int, list[UsageEvent]]]:
    """The users (in ascending id) cut into groups of about BATCH_GROUP_EVENTS events, each user's
    events whole in one group."""
    group: dict[int, list[UsageEvent]] = {}
    count = 0
    for user_id, user_events in events_by_user.items():
        if group and count + len(user_events) > BATCH_GROUP_EVENTS:
            yield group
            group, count = {}, 0
        group[user_id] = user_events
        count += len(user_events)
    if group:
        yield group


def usage_record_batch(*, events: list[UsageEvent]) -> list[Outcome]:
    """Records many requests; outcomes come back in the order of `events`.

    The users, in ascending id, are recorded in groups of about BATCH_GROUP_EVENTS events, each
    group in one transaction with its balances locked in that order; a user's events are never
    split. A group passes over the users whose balance another transaction holds (a concurrent
    batch's group): two batches over many of the same users then work side by side instead of one
    waiting for each commit of the other (bench/RESULTS.md). Those users join the next group, and
    after the last one are recorded waiting for their locks. When the database refuses a group's
    write (a request_id recorded at the same moment under another lock, a value it cannot hold),
    each of its users is recorded in a transaction of their own instead, so one user's failing
    event fails no other user's.
    """
    by_user: dict[int, list[int]] = defaultdict(list)
    for index, event in enumerate(events):
        by_user[event.user_id].append(index)
    events_by_user = {user_id: [events[index] for index in by_user[user_id]] for user_id in sorted(by_user)}
    recorded: dict[int, list[Outcome]] = {}
    passed_over: dict[int, list[UsageEvent]] = {}
    for group in _user_groups(events_by_user):
        group = passed_over | group
        passed_over = {}
        if len(group) > 1:
            # On a refused write each user of the group is recorded in a transaction of their own below.
            with contextlib.suppress(IntegrityError, DataError):
                taken = _record_users(group, skip_locked=True)
                recorded.update(taken)
                passed_over = {user_id: user_events for user_id, user_events in group.items() if user_id not in taken}
    for group in _user_groups(passed_over):
        if len(group) > 1:
            with contextlib.suppress(IntegrityError, DataError):
                recorded.update(_record_users(group, skip_locked=False))
    outcomes: list[Outcome | None] = [None] * len(events)
    for user_id, user_events in events_by_user.items():
        user_outcomes = recorded[user_id] if user_id in recorded else _record_user(user_id, user_events)
        for index, outcome in zip(by_user[user_id], user_outcomes, strict=True):
            outcomes[index] = outcome
    _count(outcomes)
    return outcomes


@dataclass(frozen=True)
class HoldResult:
    hold: CreditHold
    available: int
    created: bool


@conflict_retrying
@transaction.atomic
def hold_reserve(*, user_id: int, estimated_credits: int, hold_id: UUID | None = None) -> HoldResult:
    """Reserves credits before a streaming call; 402 when they cannot be held. Idempotent on hold_id."""
    if estimated_credits <= 0:
        raise RuleViolation("A hold must be a positive number of credits.", code=ErrorCode.INVALID_AMOUNT)
    now = timezone.now()
    account = LockedAccount.open(user_id=user_id, now=now)
    if account is None:
        raise RuleViolation(f"No user with id {user_id}.", code=ErrorCode.UNKNOWN_USER)
    if hold_id is not None:
        existing = CreditHold.objects.filter(hold_id=hold_id).first()
        if existing is not None:
            if existing.user_id != user_id or existing.amount != estimated_credits:
                raise Conflict("This hold_id is already used for another reservation.", code=ErrorCode.HOLD_ID_CONFLICT)
            account.flush()
            return HoldResult(hold=existing, available=account.available, created=False)
    if estimated_credits > account.available:
        raise insufficient_credits(
            needed=estimated_credits, balance=account.balance.amount, available=account.available
        )
    budget_available = account.budget_available()
    if budget_available is not None and estimated_credits > budget_available:
        raise budget_exceeded(needed=estimated_credits, budget_available=budget_available)
    hold = account.hold(estimated_credits, hold_id=hold_id or uuid4(), expires_at=now + settings.CREDIT_HOLD_TTL)
    account.flush()
    return HoldResult(hold=hold, available=account.available, created=True)


@transaction.atomic
def hold_release(*, hold_id: UUID) -> CreditHold:
    """Frees a hold that will not be captured. Releasing twice is harmless; a captured hold is a 409."""
    hold = CreditHold.objects.filter(hold_id=hold_id).first()
    if hold is None:
        raise NotFound("No such hold.", code=ErrorCode.UNKNOWN_HOLD)
    # Holds change under their owner's balance lock: re-read there.
    account = LockedAccount.open(user_id=hold.user_id, now=timezone.now(), expire_overdue=False)
    hold.refresh_from_db()
    if hold.status == HoldStatus.CAPTURED:
        raise Conflict("This hold has already been captured.", code=ErrorCode.HOLD_ALREADY_CAPTURED)
    account.release(hold)
    account.flush()
    return hold


def holds_expire(*, now: datetime | None = None) -> int:
    """Marks holds past their expiry as expired. Availability already ignores them; this keeps the
    table truthful. A capture racing this job still wins: it sets its own status."""
    now = now or timezone.now()
    return CreditHold.objects.filter(status=HoldStatus.HELD, expires_at__lte=now).update(
        status=HoldStatus.EXPIRED, updated_at=now
    )
