"""The live decision chain's handlers: bar → signal → order → fill.

Each handler is an *effect* run by :meth:`stocktrade.services.delivery.DeliveryService.handle`
inside one database transaction, exactly once per event: it writes rows through ``ctx.conn``
and adds the events it causes with ``ctx.outbox.add(topic, event)``; it never publishes
directly. The delivery service records the event id, commits, relays the outbox and turns
permanent errors into dead letters, so a handler only says what the event *means*.

:data:`HANDLERS` names every handler with its topic and event model; the functions
(``functions/main.py``) and :func:`subscribe` (the in-process bus) both dispatch through it.

Current scope: :func:`handle_bar` stores the bar; :func:`handle_signal`,
:func:`handle_order` and :func:`handle_fill` only record that their event was delivered
(the delivery service's ``processed_events`` row). Signals, risk and sizing, the paper
broker, and the ledger replace these bodies without touching the plumbing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stocktrade.logging import get_logger
from stocktrade.schemas.events import Bar, Event, Fill, Order, Signal, Topic

if TYPE_CHECKING:
    from stocktrade.ports import EventBus
    from stocktrade.services.delivery import DeliveryService, Effect, HandlerContext

__all__ = [
    "HANDLERS",
    "Handler",
    "handle_bar",
    "handle_fill",
    "handle_order",
    "handle_signal",
    "subscribe",
]

log = get_logger(__name__)


def handle_bar(ctx: HandlerContext[Bar]) -> None:
    """Store the bar (idempotent upsert keyed on symbol, timeframe, ts); publishes nothing.

    The same bar published again is the same event (its id is source, symbol, timeframe
    and ts), so the delivery service drops it before this runs. A bar from another source
    for a stored key replaces the stored values when they differ; equal values leave the
    row untouched.
    """
    bar = ctx.event
    ctx.conn.execute(
        """
        INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, source)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (symbol, timeframe, ts) DO UPDATE
        SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
            close = EXCLUDED.close, volume = EXCLUDED.volume, source = EXCLUDED.source,
            ingested_at = now()
        WHERE (bars.open, bars.high, bars.low, bars.close, bars.volume, bars.source)
              IS DISTINCT FROM
              (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
               EXCLUDED.source)
        """,
        (
            bar.symbol,
            bar.timeframe.value,
            bar.ts,
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            bar.source,
        ),
    )


def handle_signal(ctx: HandlerContext[Signal]) -> None:
    """Record the signal's delivery (the processed-event row); risk and sizing come here."""
    log.debug(
        "signal received",
        extra={"event_id": ctx.event.event_id, "agent_id": str(ctx.event.agent_id)},
    )


def handle_order(ctx: HandlerContext[Order]) -> None:
    """Record the order's delivery (the processed-event row); the paper broker comes here."""
    log.debug(
        "order received",
        extra={"event_id": ctx.event.event_id, "agent_id": str(ctx.event.agent_id)},
    )


def handle_fill(ctx: HandlerContext[Fill]) -> None:
    """Record the fill's delivery (the processed-event row); the ledger comes here."""
    log.debug(
        "fill received", extra={"event_id": ctx.event.event_id, "agent_id": str(ctx.event.agent_id)}
    )


@dataclass(frozen=True, slots=True)
class Handler:
    """One handler of the chain: its name (the idempotency scope), topic, model, effect."""

    name: str
    topic: Topic
    model: type[Event]
    effect: Effect[Any]


HANDLERS: dict[str, Handler] = {
    h.name: h
    for h in (
        Handler("on_bar", Topic.MARKET_BARS, Bar, handle_bar),
        Handler("on_signal", Topic.SIGNALS, Signal, handle_signal),
        Handler("on_order", Topic.ORDERS, Order, handle_order),
        Handler("on_fill", Topic.FILLS, Fill, handle_fill),
    )
}


def subscribe(bus: EventBus, delivery: DeliveryService) -> list[str]:
    """Subscribe every chain handler to ``bus`` through ``delivery`` (the in-process stack).

    What push subscriptions to the functions do in the cloud. Returns the subscription names.
    """
    names = []
    for handler in HANDLERS.values():

        def deliver(event: Event, handler: Handler = handler) -> None:
            delivery.receive(handler.name, event, handler.model, handler.effect)

        names.append(bus.subscribe(handler.topic.value, deliver, name=handler.name))
    return names
