"""The chain over whole bursts: few transactions, same effects, same exactly-once rules.

A Pub/Sub push delivers one event per request; the chain's effects
(:class:`~stocktrade.services.chain_engine.ChainEngine`) take batches, and this worker feeds
them whole bursts in process. A burst of bars is one transaction: claim every bar's id in
``processed_events``, run ``on_bars`` over all of them, then (``fuse=True``, the default)
the signals and fills they cause, the orders the signals cause, and so on, each handler's
event ids claimed in the same transaction, every book locked, read and written once (a
:class:`~stocktrade.services.chain_engine.ChainSession`). With ``fuse=False`` the caused
events go to the outbox and :meth:`BulkChainWorker.drain` takes them in batches instead
(``FOR UPDATE SKIP LOCKED``), one transaction per batch, which also picks up anything left in
the outbox by a crash or by the per-event path.

A crash anywhere rolls the whole batch back: nothing of it happened, and running it again
(or draining) does it once. Ids already claimed are skipped, as in the per-event path. A
batch whose effect fails permanently (a dead letter in the making) is retried one event at a
time through the fallback (the :class:`~stocktrade.services.delivery.DeliveryService`),
which records the dead letter and lets the rest through.

The worker consumes events itself, so it is the only consumer of those topics: use it
instead of (not next to) bus subscriptions, e.g. for replays and the burst benchmark.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from stocktrade.logging import get_logger
from stocktrade.schemas.events import Bar, Event, Topic, model_for_topic
from stocktrade.services.chain_engine import ChainEngine, ChainSession, ChainStore

__all__ = ["BulkChainWorker", "BulkDeliveryStore", "BurstStats"]

log = get_logger(__name__)

#: Handler and engine method per topic, in the order a drain batch runs them.
_STAGES: tuple[tuple[Topic, str, str], ...] = (
    (Topic.MARKET_BARS, "on_bar", "on_bars"),
    (Topic.SIGNALS, "on_signal", "on_signals"),
    (Topic.ORDERS, "on_order", "on_orders"),
    (Topic.FILLS, "on_fill", "on_fills"),
    (Topic.MODEL_PROMOTED, "on_model_promoted", "on_model_promoted"),
)
_BY_TOPIC = {t.value: (h, m) for t, h, m in _STAGES}


class BulkDeliveryStore(Protocol):
    """Bulk delivery bookkeeping (``PostgresBulkDelivery``)."""

    def transaction(self) -> AbstractContextManager[Any]:
        """One transaction; yields the connection."""
        ...

    def claim_many(self, conn: Any, handler: str, event_ids: Sequence[str]) -> set[str]:
        """Record (handler, id) for each id; returns the ids that were new."""
        ...

    def add_outbox_many(self, conn: Any, events: Sequence[Event]) -> None: ...

    def take_outbox(self, conn: Any, limit: int) -> list[tuple[int, str, str]]:
        """Lock up to ``limit`` unpublished rows: ``(id, event_id, topic)``, oldest first."""
        ...

    def payloads(self, conn: Any, ids: Sequence[int]) -> dict[int, Mapping[str, Any]]: ...

    def mark_published(self, conn: Any, ids: Sequence[int]) -> None: ...

    def is_permanent(self, exc: BaseException) -> bool:
        """Whether retrying ``exc`` cannot help (bad data): dead-letter material."""
        ...


@dataclass(frozen=True, slots=True)
class BurstStats:
    """What one :meth:`BulkChainWorker.run` did."""

    bars: int
    events: int
    batches: int
    seconds: float
    by_handler: Mapping[str, int]


class _Collect:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def mirror(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """The bulk path writes no realtime mirror (the mirror is never the source of truth)."""


class BulkChainWorker:
    """Runs bursts of bars through the whole chain in few transactions.

    Args:
        store: bulk delivery bookkeeping.
        chain_store: ``connection -> ChainStore``.
        engine: the chain engine (its caches persist across bursts).
        fallback: ``(handler, event) -> None`` handling one event on its own (the delivery
            service: records dead letters); used when a batch fails permanently.
        batch: outbox rows per drain transaction.
        fuse: handle the events a batch causes in the same transaction (one cascade per
            burst; nothing goes through the outbox) instead of leaving them in the outbox
            for the next drain batch.
    """

    def __init__(
        self,
        store: BulkDeliveryStore,
        chain_store: Callable[[Any], ChainStore],
        engine: ChainEngine,
        *,
        fallback: Callable[[str, Event], Any] | None = None,
        batch: int = 20_000,
        fuse: bool = True,
    ) -> None:
        self.store = store
        self.chain_store = chain_store
        self.engine = engine
        self.fallback = fallback
        self.batch = batch
        self.fuse = fuse
        self._memo: dict[str, Event] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def run(self, bars: Sequence[Bar]) -> BurstStats:
        """Ingest ``bars`` and drain everything they cause."""
        started = time.perf_counter()
        before = dict(self.counts)
        self.ingest(bars)
        batches = self.drain()
        handled = {k: v - before.get(k, 0) for k, v in self.counts.items()}
        return BurstStats(
            bars=len(bars),
            events=sum(handled.values()),
            batches=batches,
            seconds=time.perf_counter() - started,
            by_handler=handled,
        )

    def ingest(self, bars: Sequence[Bar]) -> None:
        """One transaction: every new bar through ``on_bar``."""
        if bars:
            batch: list[Event] = list(bars)
            self._batch(lambda _conn: ({Topic.MARKET_BARS.value: batch}, []))

    def drain(self, *, max_batches: int = 1_000) -> int:
        """Handle outbox rows until none is left; returns the batches run."""
        done = 0
        while done < max_batches and self._batch(self._take):
            done += 1
        return done

    def _take(self, conn: Any) -> tuple[dict[str, list[Event]], list[int]]:
        rows = self.store.take_outbox(conn, self.batch)
        missing = [r[0] for r in rows if r[1] not in self._memo]
        payloads = self.store.payloads(conn, missing) if missing else {}
        grouped: dict[str, list[Event]] = defaultdict(list)
        for row_id, event_id, topic in rows:
            event = self._memo.get(event_id)
            if event is None:
                event = model_for_topic(topic).model_validate(payloads[row_id])
            grouped[topic].append(event)
        return grouped, [r[0] for r in rows]

    def _batch(self, source: Callable[[Any], tuple[Mapping[str, list[Event]], list[int]]]) -> int:
        """One transaction over what ``source`` takes and everything it causes; returns the
        events taken."""
        grouped: Mapping[str, list[Event]] = {}
        row_ids: list[int] = []
        left: list[Event] = []
        try:
            with self.store.transaction() as conn:
                grouped, row_ids = source(conn)
                if not grouped:
                    return 0
                out = _Collect()
                session = ChainSession(self.chain_store(conn), out)
                pending: Mapping[str, list[Event]] = grouped
                while pending:
                    for topic, handler, method in _STAGES:
                        events = pending.get(topic.value)
                        if not events:
                            continue
                        fresh = self.store.claim_many(conn, handler, [e.event_id for e in events])
                        todo = [e for e in events if e.event_id in fresh]
                        if todo:
                            getattr(self.engine, method)(session.store, todo, out, session=session)
                        self.counts[handler] += len(todo)
                    caused, out.events = out.events, []
                    if self.fuse:
                        nxt: dict[str, list[Event]] = defaultdict(list)
                        for e in caused:
                            nxt[e.TOPIC.value].append(e)
                        pending = nxt
                    else:
                        left.extend(caused)
                        pending = {}
                session.flush()
                self.store.add_outbox_many(conn, left)
                if row_ids:
                    self.store.mark_published(conn, row_ids)
        except Exception as exc:
            self.engine.forget()  # the caches may be ahead of the rolled-back state
            if self.fallback is None or not self.store.is_permanent(exc):
                raise
            log.warning(
                "a batch failed permanently; handling its events one by one",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )
            self._one_by_one(grouped, row_ids)
            return sum(len(v) for v in grouped.values())
        except BaseException:
            self.engine.forget()
            raise
        for event_id in (e.event_id for v in grouped.values() for e in v):
            self._memo.pop(event_id, None)
        for e in left:
            self._memo[e.event_id] = e
        return sum(len(v) for v in grouped.values())

    def _one_by_one(self, grouped: Mapping[str, list[Event]], row_ids: list[int]) -> None:
        assert self.fallback is not None
        for topic, handler, _method in _STAGES:
            for event in grouped.get(topic.value, ()):
                self.fallback(handler, event)
                self.counts[handler] += 1
        if row_ids:
            with self.store.transaction() as conn:
                self.store.mark_published(conn, row_ids)

    def pending(self) -> Iterator[str]:
        """Event ids the worker produced and has not consumed yet."""
        return iter(list(self._memo))
