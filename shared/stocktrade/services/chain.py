"""The live decision chain's handlers: bar → signal → order → fill (and model promotions).

Each handler is an *effect* run by :meth:`stocktrade.services.delivery.DeliveryService.handle`
inside one database transaction, exactly once per event: it writes rows through ``ctx.conn``
and adds the events it causes with ``ctx.outbox.add(topic, event)``; it never publishes
directly. The delivery service records the event id, commits, relays the outbox and turns
permanent errors (unknown agent or symbol, an order no decision placed, ...) into dead
letters, so a handler only says what the event *means*.

The meaning lives in :class:`stocktrade.services.chain_engine.ChainEngine` (see its module
docs for how a bar flows and where state lives); the handlers here hand it one event, the
transaction's connection (as a ``PostgresChainStore``) and a sink that writes the outbox and
the realtime mirror. The engine (strategy instances, ONNX runtimes) is built once per
process and cached: :func:`engine_for`.

:data:`HANDLERS` names every handler with its topic and event model; the functions
(``functions/main.py``) and :func:`subscribe` (the in-process bus) both dispatch through it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stocktrade.logging import get_logger
from stocktrade.schemas.events import Bar, Event, Fill, ModelPromoted, Order, Signal, Topic

if TYPE_CHECKING:
    from stocktrade.ports import EventBus
    from stocktrade.services.chain_engine import ChainEngine, ChainStore
    from stocktrade.services.delivery import DeliveryService, Effect, HandlerContext

__all__ = [
    "HANDLERS",
    "Handler",
    "engine_for",
    "handle_bar",
    "handle_fill",
    "handle_model_promoted",
    "handle_order",
    "handle_signal",
    "model_reader",
    "set_engine",
    "subscribe",
]

log = get_logger(__name__)

_lock = threading.Lock()
_engine: ChainEngine | None = None


def model_reader(deps: Any = None) -> Any:
    """``uri -> bytes`` for ONNX files: ``file://`` paths, ``gs://`` objects, or keys of the
    object store of ``deps`` (a :class:`~stocktrade.bootstrap.Container`)."""
    from pathlib import Path
    from urllib.parse import unquote, urlsplit

    from stocktrade.errors import NotFoundError, ValidationError

    def read(uri: str) -> bytes:
        parts = urlsplit(uri)
        if parts.scheme == "file":
            path = Path(unquote(parts.path))
            if not path.is_file():
                raise NotFoundError(f"ONNX file not found: {uri}")
            return path.read_bytes()
        if parts.scheme == "gs":
            from stocktrade.adapters.object_store import open_object_store

            settings = getattr(deps, "settings", None)
            bucket = open_object_store(f"gs://{parts.netloc}", settings=settings)
            return bucket.get_bytes(parts.path.lstrip("/"))
        if parts.scheme:
            raise ValidationError(f"model URI must be file://, gs:// or a store key, found {uri!r}")
        store = getattr(deps, "store", None)
        if store is None:
            raise ValidationError(f"model URI {uri!r} is a store key but no object store is wired")
        return store().get_bytes(uri)  # type: ignore[no-any-return]

    return read


def engine_for(deps: Any = None) -> ChainEngine:
    """This process's chain engine.

    ``deps`` may carry its own (an attribute ``chain_engine``: tests, the bulk worker);
    otherwise one engine per process is built on first use, reading ONNX files through the
    object store of ``deps`` when it has one.
    """
    own = getattr(deps, "chain_engine", None)
    if own is not None:
        return own() if callable(own) else own  # type: ignore[no-any-return]
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                from stocktrade.services.agents import PolicyRuntimes
                from stocktrade.services.chain_engine import ChainEngine

                _engine = ChainEngine(PolicyRuntimes(model_reader(deps)))
    return _engine


def set_engine(engine: ChainEngine | None) -> None:
    """Use ``engine`` as this process's default (``None``: build a fresh one on next use)."""
    global _engine
    _engine = engine


def _store(ctx: HandlerContext[Any]) -> ChainStore:
    from stocktrade.adapters.postgres.chain import PostgresChainStore

    return PostgresChainStore(ctx.conn)


class _Sink:
    """Events go to the transaction's outbox; mirror writes wait for the commit."""

    def __init__(self, ctx: HandlerContext[Any]) -> None:
        self._ctx = ctx

    def emit(self, event: Event) -> None:
        self._ctx.outbox.add(event.TOPIC.value, event)

    def mirror(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        self._ctx.mirror.write(collection, doc_id, _mirror_safe(data))


def _mirror_safe(data: Mapping[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(dict(data), default=str))  # type: ignore[no-any-return]


def handle_bar(ctx: HandlerContext[Bar]) -> None:
    """Store the bar; step every active agent's book on it (open fill, strategy, signal)."""
    engine_for(ctx.deps).on_bars(_store(ctx), [ctx.event], _Sink(ctx))


def handle_signal(ctx: HandlerContext[Signal]) -> None:
    """Risk checks and sizing by the trading core; the decision record and the order."""
    engine_for(ctx.deps).on_signals(_store(ctx), [ctx.event], _Sink(ctx))


def handle_order(ctx: HandlerContext[Order]) -> None:
    """The paper broker accepts the order; it fills at the next bar's open (``on_bar``)."""
    engine_for(ctx.deps).on_orders(_store(ctx), [ctx.event], _Sink(ctx))


def handle_fill(ctx: HandlerContext[Fill]) -> None:
    """Positions (FIFO lots), cash ledger, realised P&L, trades, leaderboard."""
    engine_for(ctx.deps).on_fills(_store(ctx), [ctx.event], _Sink(ctx))


def handle_model_promoted(ctx: HandlerContext[ModelPromoted]) -> None:
    """Agents following the policy switch to the new version; cached runtimes are dropped."""
    engine_for(ctx.deps).on_model_promoted(_store(ctx), [ctx.event], _Sink(ctx))


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
        Handler("on_model_promoted", Topic.MODEL_PROMOTED, ModelPromoted, handle_model_promoted),
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
