"""Where the apps above payments plug in (each from its AppConfig.ready()); payments imports none of them.

- An operation kind's effect: what a settled operation does to the owning app's subject. `succeeded`
  runs in the transaction that marks the operation succeeded (once); `failed` in the one that marks
  it failed (releasing what the operation held, such as a coupon or a pending tier change);
  `invoice_corrected`, for a kind whose operation makes its own invoice, in the transaction of each
  later event of that invoice once it is paid (Stripe's word on what it charged).
- Event handlers: for each Stripe event type, the handlers to try in registration order. A handler
  takes the stored `WebhookEvent` and returns the result to store, or None when the event is not
  about anything it owns; the first result wins, and an event nobody claims is acknowledged. A
  handler that recognises the kind of object but cannot link it to anything here raises `Unmatched`.
- Event reads: for each event type, the reads its handlers make first (`reads(row) -> statements`),
  sent in the inbox's first round trip of the event's transaction, after the event's lock and its
  object's version row; a handler's own `sql.read_all` of them is then answered from those rows
  (`sql.reads_primed`) until another statement is sent. A lock a read takes is held from then on.
- Event fetchers: for each event type, what to read from Stripe before the event is processed (the
  API is the source of truth when the event alone is not enough). A fetcher takes the event's object
  and returns the provider objects it read, by id; it runs with no transaction open. Its `known`
  read, when it has one, tells from this database alone that there is nothing to fetch: the inbox
  sends it with its own first read and calls the fetcher only when it returned no row.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from billing_project.sql import Statement


class EffectNotApplicable(Exception):
    """The money moved but its effect no longer applies (the subject changed meanwhile): the
    payment is returned instead."""


class Unmatched(Exception):
    """The event is about an object nothing here is linked to (a subscription not created here, a
    checkout naming no user of ours): acknowledged, kept as `unmatched` with this reason, and
    processed again once staff have linked it."""


@dataclass(frozen=True)
class Effect:
    succeeded: Callable[..., dict]
    failed: Callable[..., None] | None = None
    invoice_corrected: Callable[..., dict] | None = None


_effects: dict[str, Effect] = {}
_event_handlers: dict[str, list[Callable]] = defaultdict(list)
_event_fetchers: dict[str, list["Fetcher"]] = defaultdict(list)
_event_reads: dict[str, list[Callable]] = defaultdict(list)


def effect_register(
    kind: str,
    *,
    succeeded: Callable[..., dict],
    failed: Callable[..., None] | None = None,
    invoice_corrected: Callable[..., dict] | None = None,
) -> None:
    """`succeeded(*, operation, facts) -> dict` applies the effect of a settled operation (facts: the
    provider ids and amounts it learned); `failed(*, operation)` releases what it held;
    `invoice_corrected(*, operation, invoice, reason) -> dict` brings what the effect recorded of the
    operation's paid invoice to the invoice's amounts as Stripe states them (a correction, no money
    moved), returning {field: [before, after]} of what changed."""
    _effects[kind] = Effect(succeeded=succeeded, failed=failed, invoice_corrected=invoice_corrected)


def effect_of(kind: str) -> Effect:
    try:
        return _effects[kind]
    except KeyError:
        raise LookupError(f"No effect is registered for payment operations of kind '{kind}'.") from None


def event_handler_register(event_type: str, handler: Callable) -> None:
    if handler not in _event_handlers[event_type]:
        _event_handlers[event_type].append(handler)


def event_handlers(event_type: str) -> list[Callable]:
    return _event_handlers.get(event_type, [])


def event_reads_register(event_type: str, reads: Callable[..., list[Statement]]) -> None:
    if reads not in _event_reads[event_type]:
        _event_reads[event_type].append(reads)


def event_reads(event_type: str) -> list[Callable[..., list[Statement]]]:
    return _event_reads.get(event_type, [])


@dataclass(frozen=True)
class Fetcher:
    """`fetch(data_object) -> {id: provider object}` reads Stripe (and checks this database itself,
    so it can be called alone). `known(data_object)`, optional, is a read statement (sql, params)
    returning a row when what `fetch` would read is known here already, or None when the event
    names nothing it could look up."""

    fetch: Callable[[dict], dict]
    known: Callable[[dict], Statement | None] | None = None


def event_fetcher_register(
    event_type: str, fetcher: Callable[[dict], dict], *, known: Callable[[dict], Statement | None] | None = None
) -> None:
    entry = Fetcher(fetch=fetcher, known=known)
    if entry not in _event_fetchers[event_type]:
        _event_fetchers[event_type].append(entry)


def event_fetchers(event_type: str) -> list[Fetcher]:
    return _event_fetchers.get(event_type, [])


@dataclass(frozen=True)
class PaymentReactions:
    """Each takes `(*, payment)` and runs in the transaction that records the refund or dispute.
    `refunded_fully` is called when the payment becomes fully refunded or its dispute is lost;
    `refund_recorded` on every change of the refunded amount, a growth or the lowering by a refund
    the provider reports failed (keeping the owner's own records in step)."""

    refunded_fully: Callable[..., dict]
    dispute_opened: Callable[..., dict]
    dispute_won: Callable[..., dict]
    refund_recorded: Callable[..., None] | None = None


_payment_reactions: dict[str, PaymentReactions] = {}


def payment_reactions_register(kind: str, reactions: PaymentReactions) -> None:
    _payment_reactions[kind] = reactions


def payment_reactions_of(kind: str) -> PaymentReactions | None:
    """None for a kind whose refunds and disputes are only recorded."""
    return _payment_reactions.get(kind)
