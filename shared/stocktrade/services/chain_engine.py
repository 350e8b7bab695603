"""The live chain's business logic: bars in; signals, decisions, orders, fills, ledger out.

:class:`ChainEngine` holds what one process keeps between events (strategy instances,
decision-log feature state and ONNX runtimes, each cached per book or model version) and
runs the chain's effects over a :class:`ChainStore` (``PostgresChainStore``, working inside
the delivery transaction). Every effect takes a *batch* of events; a Pub/Sub push delivers a
batch of one (:mod:`stocktrade.services.chain`), the in-process bulk worker
(:mod:`stocktrade.services.chain_worker`) whole bursts. Rows are written in bulk either way.

How a bar flows (agent A trading symbol S; state lives in A's ``chain_books`` row for S):

``on_bar`` (topic ``market-bars``)
    store the bar; for each active agent trading S: lock the book; skip the bar if it is
    not newer than the book's last bar (a redelivered or stale bar); if the previous bar
    still awaits its decision (its signal not handled yet), decide it first, exactly as
    ``on_signal`` would; then :func:`~stocktrade.services.paper_book.step_bar`: the paper
    broker fills the pending order at this bar's open (``fills`` rows with the book's
    execution sequence, ``Fill`` events), the strategy/policy answers (``signals`` row,
    ``Signal`` event with model version, backend and latency).
``on_signal`` (``signals``)
    lock the book; if that bar is still undecided, :func:`~stocktrade.services.paper_book.decide`
    runs the trading core: risk checks, kill switch, sizing target. Records the decision
    (FMEL: market state, strategy state, policy output, risk checks with codes and reasons,
    sizing, order id, latencies), the order (``orders`` row with a deterministic
    ``client_order_id``, ``Order`` event) and the book's equity at the close.
``on_order`` (``orders``)
    the paper broker accepts the order (``new`` -> ``accepted``); it fills at the next
    bar's open, in that bar's ``on_bar``.
``on_fill`` (``fills``)
    the ledger projection: applies the book's unapplied fills in execution order (FIFO lots,
    realised P&L) to ``positions``, the agent's ``cash_ledger`` and ``chain_trades``, then
    recomputes the agent's leaderboard row from its equity snapshots.

Every step is idempotent on its own (the delivery service skips a handled event id) *and*
by the book's state (a bar stepped or decided once is never stepped or decided again), so
events redelivered, reordered across topics or handled by the "help-along" path change
nothing a second time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from stocktrade.domain.actions import Action
from stocktrade.domain.bars import Bar as DomainBar
from stocktrade.domain.orders import Side, to_decimal
from stocktrade.domain.risk import RiskCode, describe
from stocktrade.errors import PermanentError, ValidationError
from stocktrade.logging import get_logger
from stocktrade.quant.features import FeatureSpec, IncrementalFeatures
from stocktrade.schemas.events import Bar, Event, Fill, ModelPromoted, Order, Signal, derive_id
from stocktrade.services import strategy_state
from stocktrade.services.agents import (
    BACKEND_ONNX,
    BACKEND_RULES,
    AgentConfig,
    PolicyRuntimes,
    build_agent_strategy,
)
from stocktrade.services.paper_book import BarStep, BookFill, BookState, Decided, decide, step_bar
from stocktrade.sim import kernels

if TYPE_CHECKING:
    from stocktrade.strategies.base import Strategy

__all__ = [
    "DECISION_FEATURES",
    "BookRow",
    "ChainEngine",
    "ChainSession",
    "ChainStore",
    "ChainWrites",
    "FillProjection",
    "Sink",
]

log = get_logger(__name__)

#: The features logged with every decision (FMEL market state), per agent and symbol.
DECISION_FEATURES = FeatureSpec()

#: Risk checks the decision runs, in the order the log lists them.
_DECISION_CHECKS = (
    RiskCode.WARMUP,
    RiskCode.HALTED,
    RiskCode.KILL_SWITCH,
    RiskCode.SHORT_NOT_ALLOWED,
    RiskCode.THROTTLE_MIN_BARS,
    RiskCode.THROTTLE_MAX_PER_DAY,
)
_ACTION_NAMES = {int(a): a.name.lower() for a in Action}
_STATUS = {"filled": "filled", "rejected": "rejected", "expired": "cancelled"}


@dataclass(slots=True)
class BookRow:
    """A locked book with its agent."""

    agent: AgentConfig
    book: BookState


@dataclass(slots=True)
class FillProjection:
    """What the ledger projection needs for one book: its position row and new fills."""

    agent_id: UUID
    symbol: str
    qty: Decimal
    realised_pnl: Decimal
    fees_paid: Decimal
    lots: list[dict[str, str]]
    fill_seq: int
    fills: list[dict[str, Any]]  # unapplied fills, by seq: fill_id, order_id, side, qty, ...


@dataclass
class ChainWrites:
    """Rows one effect writes, flushed in bulk by :meth:`ChainStore.flush`."""

    books: dict[tuple[UUID, str], BookState] = field(default_factory=dict)
    stepped: set[tuple[UUID, str]] = field(default_factory=set)
    signals: list[dict[str, Any]] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    filled_orders: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    book_equity: list[dict[str, Any]] = field(default_factory=list)
    equity_from: dict[UUID, datetime] = field(default_factory=dict)

    def touch_equity(self, agent_id: UUID, ts: datetime) -> None:
        prev = self.equity_from.get(agent_id)
        if prev is None or ts < prev:
            self.equity_from[agent_id] = ts


class ChainSession:
    """One transaction's view of the chain: the books it has locked and the rows it will write.

    The per-event handlers open one per event. The bulk worker keeps one across a whole
    cascade (bars, then the signals, orders and fills they cause) in one transaction, so each
    book is locked, read and written once however many handlers touch it.
    """

    def __init__(self, store: ChainStore, sink: Sink) -> None:
        self.store = store
        self.sink = sink
        self.rows: dict[tuple[UUID, str], BookRow] = {}
        self._symbols: set[tuple[str, str]] = set()
        self.writes = ChainWrites()

    def books_for_symbols(self, keys: Iterable[tuple[str, str]]) -> list[BookRow]:
        """Active agents' books of these (symbol, timeframe) pairs, locked once."""
        wanted = set(keys)
        missing = wanted - self._symbols
        if missing:
            for row in self.store.lock_books_for_symbols(missing):
                self.rows.setdefault(row.book.key, row)
            self._symbols |= missing
        return [
            r
            for r in self.rows.values()
            if (r.book.symbol, r.book.timeframe) in wanted and r.agent.status == "active"
        ]

    def books(self, keys: Iterable[tuple[UUID, str]]) -> dict[tuple[UUID, str], BookRow]:
        """These books (any agent status), locked once."""
        wanted = set(keys)
        missing = [k for k in wanted if k not in self.rows]
        if missing:
            self.rows.update(self.store.lock_books(missing))
        return {k: self.rows[k] for k in wanted if k in self.rows}

    def flush(self, *, books: bool = True) -> None:
        """Write what was collected; ``books=False`` keeps the book rows for a later flush
        (records other handlers of the cascade read, such as orders and fills, go now)."""
        writes = self.writes
        if books:
            self.writes = ChainWrites()
        else:
            self.writes = ChainWrites(books=writes.books, stepped=writes.stepped)
            writes = ChainWrites(
                signals=writes.signals,
                fills=writes.fills,
                filled_orders=writes.filled_orders,
                decisions=writes.decisions,
                orders=writes.orders,
                book_equity=writes.book_equity,
                equity_from=writes.equity_from,
            )
        self.store.flush(writes)


class ChainStore(Protocol):
    """The chain's storage, inside the delivery transaction (``PostgresChainStore``)."""

    def unknown_symbols(self, symbols: Iterable[str]) -> set[str]:
        """Symbols with no stored bars that no agent trades."""
        ...

    def upsert_bars(self, bars: Sequence[DomainBar]) -> None: ...

    def lock_books_for_symbols(self, keys: Iterable[tuple[str, str]]) -> list[BookRow]:
        """Books of active agents trading (symbol, timeframe), locked, ordered by key."""
        ...

    def lock_books(self, keys: Iterable[tuple[UUID, str]]) -> dict[tuple[UUID, str], BookRow]:
        """The books with these keys (any agent status), locked.

        Both lock methods may leave ``strategy_state`` and ``feature_state`` unread
        (``BookState.states_loaded`` false); :meth:`load_states` reads them."""
        ...

    def load_states(self, books: Sequence[BookState]) -> None:
        """Read the strategy and feature states of ``books`` (in place)."""
        ...

    def agents(self, ids: Iterable[UUID]) -> dict[UUID, AgentConfig]: ...

    def flush(self, writes: ChainWrites) -> None:
        """Write everything collected, in dependency order."""
        ...

    def existing_orders(self, client_order_ids: Iterable[str]) -> set[str]: ...

    def accept_orders(self, client_order_ids: Iterable[str]) -> None: ...

    def existing_fills(self, fill_ids: Iterable[str]) -> set[str]: ...

    def lock_projections(self, keys: Iterable[tuple[UUID, str]]) -> list[FillProjection]:
        """Lock the agents' cash ledgers and these positions; return unapplied fills."""
        ...

    def cash_balances(self, agent_ids: Iterable[UUID]) -> dict[UUID, Decimal]: ...

    def save_projection(
        self,
        positions: Sequence[dict[str, Any]],
        cash_rows: Sequence[dict[str, Any]],
        trades: Sequence[dict[str, Any]],
    ) -> None: ...

    def refresh_leaderboard(self, agent_ids: Iterable[UUID]) -> list[dict[str, Any]]:
        """Recompute and store the leaderboard rows of these agents; returns them."""
        ...

    def follow_promotion(self, event: ModelPromoted) -> list[UUID]:
        """Point agents following the promoted policy at its new version; returns them."""
        ...


class Sink(Protocol):
    """Where an effect sends what it causes: events (the outbox) and mirror writes."""

    def emit(self, event: Event) -> None: ...

    def mirror(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None: ...


@dataclass(slots=True)
class _Cached:
    strategy: Strategy
    features: IncrementalFeatures
    version: tuple[int, datetime | None]
    agent_key: tuple[Any, ...]


def _passed(code: RiskCode, agent: AgentConfig, d: Decided) -> str:
    """Why a decision-time check let the decision through (the log's positive reasons)."""
    limits = agent.risk
    if code is RiskCode.WARMUP:
        return f"bar {d.bar_index} is past the {limits.warmup_bars}-bar warm-up"
    if code is RiskCode.HALTED:
        return "the book is not halted"
    if code is RiskCode.KILL_SWITCH:
        if limits.max_daily_loss is None and limits.max_daily_loss_pct is None:
            return "no daily loss limit set"
        return (
            f"the day's loss is within the limit ({limits.max_daily_loss} cash / "
            f"{limits.max_daily_loss_pct} of the day's opening equity)"
        )
    if code is RiskCode.SHORT_NOT_ALLOWED:
        return "shorting allowed" if limits.allow_short else "the target is not short"
    if code is RiskCode.THROTTLE_MIN_BARS:
        return f"at least {limits.min_bars_between_orders} bar(s) since the last order"
    if code is RiskCode.THROTTLE_MAX_PER_DAY:
        cap = limits.max_orders_per_day
        return "no daily order cap" if cap is None else f"fewer than {cap} orders today"
    return describe(code, limits)


def _action_name(signal_record: Mapping[str, Any]) -> str:
    action = int(signal_record["action"])
    if action >= 0:
        return _ACTION_NAMES[action]
    target = signal_record["target"]
    if target is None:
        return "hold"
    return "buy" if target > 0 else "sell"


def _unit(p: float) -> float:
    return min(1.0, max(0.0, float(p)))


class ChainEngine:
    """The chain's effects, with this process's caches.

    Args:
        runtimes: ONNX policy runtimes (loaded once per model version).
        jit: use the compiled kernels (False avoids the JIT compile on a cold start; same
            results).
        fault: test hook called at named points inside effects (``"bars_stored"``,
            ``"book_stepped"``, ``"decided"``, ``"before_flush"``, ``"fills_applied"``);
            raising there simulates a crash mid-handler (the transaction rolls back).
    """

    def __init__(
        self,
        runtimes: PolicyRuntimes | None = None,
        *,
        jit: bool = True,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        self.runtimes = runtimes
        self.jit = jit
        self.fault = fault
        self._cache: dict[tuple[UUID, str], _Cached] = {}

    def _fault(self, point: str) -> None:
        if self.fault is not None:
            self.fault(point)

    # -- strategy instances ---------------------------------------------------------------
    def _cached(self, row: BookRow) -> _Cached | None:
        """The cached instruments of a book if they are in the state its row holds."""
        book = row.book
        cached = self._cache.get(book.key)
        if (
            cached is not None
            and cached.version == (book.bars_seen, book.last_bar_ts)
            and cached.agent_key == row.agent.cache_key
        ):
            return cached
        return None

    def _instruments(self, row: BookRow) -> _Cached:
        """The book's strategy and decision features, in the state the book row holds."""
        book, agent = row.book, row.agent
        version = (book.bars_seen, book.last_bar_ts)
        cached = self._cached(row)
        if cached is not None:
            return cached
        if not book.states_loaded:
            raise ValidationError(f"book {book.agent_id}/{book.symbol}: states not loaded")
        strategy = build_agent_strategy(agent, self.runtimes)
        try:
            strategy_state.restore(strategy, book.strategy_state)
        except ValidationError:
            if book.model_version_id == agent.model_version_id:
                raise
            # A newly promoted policy whose state does not fit the old one: warm up afresh.
            log.warning(
                "strategy state does not fit the new model version; starting it afresh",
                extra={
                    "agent_id": str(agent.id),
                    "symbol": book.symbol,
                    "model_version_id": str(agent.model_version_id),
                },
            )
            strategy.reset()
        features = (
            IncrementalFeatures.from_state(book.feature_state)
            if book.feature_state is not None
            else IncrementalFeatures(DECISION_FEATURES)
        )
        cached = _Cached(strategy, features, version, agent.cache_key)
        self._cache[book.key] = cached
        return cached

    def forget(self) -> None:
        """Drop every cached strategy (the next event restores from the stored state)."""
        self._cache.clear()

    # -- on_bar ---------------------------------------------------------------------------
    def on_bars(
        self,
        store: ChainStore,
        bars: Sequence[Bar],
        sink: Sink,
        *,
        session: ChainSession | None = None,
    ) -> None:
        """Store bars and step every active agent's book on each (see the module docs).

        Raises:
            PermanentError: a bar's symbol is unknown (no stored bars, no agent trades it).
        """
        if not bars:
            return
        unknown = store.unknown_symbols({b.symbol for b in bars})
        if unknown:
            raise PermanentError(
                f"unknown symbol(s) {sorted(unknown)}: no bars are stored for them and no "
                "agent trades them (import their history or create an agent first)"
            )
        domain = [b.to_domain() for b in bars]
        store.upsert_bars(domain)
        self._fault("bars_stored")
        own = session is None
        ses = ChainSession(store, sink) if session is None else session
        rows = ses.books_for_symbols({(b.symbol, b.timeframe.value) for b in domain})
        misses = [r.book for r in rows if not r.book.states_loaded and self._cached(r) is None]
        if misses:
            store.load_states(misses)
        by_symbol: dict[tuple[str, str], list[BookRow]] = defaultdict(list)
        for row in rows:
            by_symbol[(row.book.symbol, row.book.timeframe)].append(row)
        writes = ses.writes
        ordered = sorted(zip(bars, domain, strict=True), key=lambda p: (p[1].ts, p[1].symbol))
        for event, bar in ordered:
            for row in by_symbol.get((bar.symbol, bar.timeframe.value), ()):
                book = row.book
                if book.last_bar_ts is not None and bar.ts <= book.last_bar_ts:
                    log.info(
                        "bar not newer than the book's last bar; skipped",
                        extra={
                            "agent_id": str(book.agent_id),
                            "symbol": bar.symbol,
                            "bar_ts": bar.ts.isoformat(),
                            "last_bar_ts": book.last_bar_ts.isoformat(),
                        },
                    )
                    continue
                if book.signal is not None:
                    self._decide(row, writes, sink)  # the previous bar's signal is late
                self._step(row, event, bar, writes, sink)
                self._fault("book_stepped")
        if own:
            self._fault("before_flush")
            ses.flush()

    def _step(
        self, row: BookRow, event: Bar, bar: DomainBar, writes: ChainWrites, sink: Sink
    ) -> None:
        agent, book = row.agent, row.book
        inst = self._instruments(row)
        backend = BACKEND_ONNX if agent.kind == "policy" else BACKEND_RULES
        step = step_bar(
            book,
            bar,
            inst.strategy,
            inst.features,
            agent.book_config(jit=self.jit),
            backend=backend,
            model_version_id=agent.model_version_id,
        )
        book.strategy_state = strategy_state.snapshot(inst.strategy)
        book.feature_state = inst.features.to_state()
        book.model_version_id = agent.model_version_id
        inst.version = (book.bars_seen, book.last_bar_ts)
        book.states_loaded = True
        writes.books[book.key] = book
        writes.stepped.add(book.key)
        for bf in step.fills:
            self._record_fill(agent, book, bf, writes, sink)
        self._record_signal(agent, book, event, step, writes, sink)

    def _record_fill(
        self, agent: AgentConfig, book: BookState, bf: BookFill, writes: ChainWrites, sink: Sink
    ) -> None:
        order_id = bf.order.client_order_id
        fill = bf.fill
        if fill is not None:
            writes.fills.append(
                {
                    "id": fill.fill_id,
                    "client_order_id": order_id,
                    "agent_id": agent.id,
                    "symbol": book.symbol,
                    "side": fill.side.value,
                    "qty": fill.qty,
                    "price": fill.price,
                    "fee": fill.fee,
                    "ts": fill.ts,
                    "seq": bf.seq,
                }
            )
            sink.emit(
                Fill(
                    fill_id=fill.fill_id,
                    client_order_id=order_id,
                    agent_id=agent.id,
                    symbol=book.symbol,
                    side=fill.side,
                    qty=fill.qty,
                    price=fill.price,
                    fee=fill.fee,
                    ts=fill.ts,
                )
            )
        writes.filled_orders.append(
            {
                "client_order_id": order_id,
                "status": _STATUS[bf.status.value],
                # A rejected order goes the target's way (as the backtest reports it).
                "side": (
                    fill.side
                    if fill is not None
                    else Side.BUY
                    if bf.order.target > 0
                    else Side.SELL
                ).value,
                "qty": None if fill is None else fill.qty,
                "fill_ts": bf.bar_ts,
                "risk_codes": bf.risk_codes,
            }
        )

    def _record_signal(
        self,
        agent: AgentConfig,
        book: BookState,
        event: Bar,
        step: BarStep,
        writes: ChainWrites,
        sink: Sink,
    ) -> None:
        record = book.signal
        assert record is not None
        probs = record["probs"]
        confidence = step.signal.confidence
        signal = Signal(
            agent_id=agent.id,
            symbol=book.symbol,
            bar_ts=step.bar.ts,
            action=_action_name(record),  # type: ignore[arg-type]
            confidence=None if math.isnan(confidence) else _unit(confidence),
            probs=None if probs is None else tuple(_unit(p) for p in probs),
            model_version_id=agent.model_version_id,
            inference_backend=record["backend"],
            inference_latency_us=step.latency_us,
            bar_event_id=event.event_id,
        )
        record["event_id"] = signal.event_id
        writes.signals.append(
            {
                "id": signal.event_id,
                "agent_id": agent.id,
                "symbol": book.symbol,
                "bar_ts": step.bar.ts,
                "action": signal.action,
                "confidence": signal.confidence,
                "probabilities": None if probs is None else list(probs),
                "model_version_id": agent.model_version_id,
                "inference_backend": record["backend"],
                "inference_latency_us": step.latency_us,
            }
        )
        sink.emit(signal)

    # -- on_signal ------------------------------------------------------------------------
    def on_signals(
        self,
        store: ChainStore,
        signals: Sequence[Signal],
        sink: Sink,
        *,
        session: ChainSession | None = None,
    ) -> None:
        """Decide every signal's bar that is still undecided (risk, sizing, order).

        Raises:
            PermanentError: the agent does not exist, or does not trade the symbol.
        """
        if not signals:
            return
        agents = store.agents({s.agent_id for s in signals})
        for s in signals:
            agent = agents.get(s.agent_id)
            if agent is None:
                raise PermanentError(f"signal {s.event_id} names unknown agent {s.agent_id}")
            if s.symbol not in agent.symbols:
                raise PermanentError(
                    f"signal {s.event_id}: agent {agent.name!r} trades {list(agent.symbols)}, "
                    f"not the unknown symbol {s.symbol!r}"
                )
        own = session is None
        ses = ChainSession(store, sink) if session is None else session
        rows = ses.books({(s.agent_id, s.symbol) for s in signals})
        writes = ses.writes
        for s in sorted(signals, key=lambda x: (x.bar_ts, str(x.agent_id), x.symbol)):
            row = rows.get((s.agent_id, s.symbol))
            if row is None:
                log.warning(
                    "signal for an agent without a paper book; nothing to decide",
                    extra={"agent_id": str(s.agent_id), "symbol": s.symbol},
                )
                continue
            pending = row.book.signal
            if pending is not None and datetime.fromisoformat(pending["bar"]["ts"]) == s.bar_ts:
                self._decide(row, writes, sink)
            else:
                log.debug(
                    "signal already decided",
                    extra={
                        "agent_id": str(s.agent_id),
                        "symbol": s.symbol,
                        "bar_ts": s.bar_ts.isoformat(),
                    },
                )
        if own:
            self._fault("before_flush")
            ses.flush()

    def _decide(self, row: BookRow, writes: ChainWrites, sink: Sink) -> Decided:
        agent, book = row.agent, row.book
        record = book.signal
        assert record is not None
        decided = decide(book, agent.book_config(jit=self.jit))
        self._fault("decided")
        writes.books[book.key] = book
        bar = decided.bar
        decision_id = derive_id("decision", agent.id, book.symbol, bar.ts)
        order = decided.order
        if order is not None:
            if decided.estimated_qty != 0:
                side = Side.BUY if decided.estimated_qty > 0 else Side.SELL
            else:
                side = (
                    Side.BUY
                    if order.target * float(decided.equity) > float(decided.position_value)
                    else Side.SELL
                )
            reason = order.reason or "strategy target"
            writes.orders.append(
                {
                    "client_order_id": order.client_order_id,
                    "agent_id": agent.id,
                    "symbol": book.symbol,
                    "side": side.value,
                    "target_fraction": to_decimal(order.target),
                    "decision_id": decision_id,
                    "bar_ts": bar.ts,
                    "reason": reason,
                }
            )
            sink.emit(
                Order(
                    client_order_id=order.client_order_id,
                    agent_id=agent.id,
                    symbol=book.symbol,
                    side=side,
                    target_fraction=to_decimal(order.target),
                    bar_ts=bar.ts,
                    decision_id=UUID(decision_id),
                    reason=reason,
                )
            )
        writes.decisions.append(self._decision_row(agent, book, decided, decision_id))
        writes.book_equity.append(
            {
                "agent_id": agent.id,
                "symbol": book.symbol,
                "ts": bar.ts,
                "bar_index": decided.bar_index,
                "cash": decided.cash,
                "qty": decided.position_qty,
                "position_value": decided.position_value,
                "equity": decided.equity,
            }
        )
        writes.touch_equity(agent.id, bar.ts)
        sink.mirror(
            "agent_books",
            f"{agent.id}:{book.symbol}",
            {
                "agent_id": str(agent.id),
                "symbol": book.symbol,
                "ts": bar.ts.isoformat(),
                "equity": str(decided.equity),
                "cash": str(decided.cash),
                "qty": str(decided.position_qty),
            },
        )
        return decided

    def _decision_row(
        self, agent: AgentConfig, book: BookState, d: Decided, decision_id: str
    ) -> dict[str, Any]:
        rec = d.signal
        failed = {e.code: e for e in d.risk.events}
        checks = []
        for code in _DECISION_CHECKS:
            event = failed.get(code)
            checks.append(
                {
                    "check": code.name.lower(),
                    "passed": event is None,
                    "code": code.name,
                    "reason": event.reason if event is not None else _passed(code, agent, d),
                }
            )
        state = d.state
        order = d.order
        action_id = int(rec["action"])
        return {
            "id": decision_id,
            "agent_id": agent.id,
            "symbol": book.symbol,
            "bar_ts": d.bar.ts,
            "bar_number": d.bar_index,
            "signal_id": rec.get("event_id")
            or derive_id("signal", agent.id, book.symbol, d.bar.ts),
            "market_state": {"bar": rec["bar"], "features": rec["features"]},
            "strategy_state": {
                "position_qty": str(d.position_qty),
                "position_qty_at_signal": rec["position_qty"],
                "cash": str(d.cash),
                "position_value": str(d.position_value),
                "equity": str(d.equity),
                "target_in_force": d.target_before,
                "halted": d.halted,
                "day_start_equity": state.day_start_equity,
                "orders_today": state.orders_today,
                "realised_pnl": str(book.realised_pnl),
            },
            "policy_output": {
                "strategy": agent.strategy,
                "action": _action_name(rec),
                "action_id": action_id,
                "target": rec["target"],
                "probs": rec["probs"],
                "confidence": (
                    None
                    if rec["probs"] is None or not 0 <= action_id < len(rec["probs"])
                    else rec["probs"][action_id]
                ),
            },
            "model_version_id": agent.model_version_id,
            "risk_checks": checks,
            "sizing": {
                "desired_target": None
                if math.isnan(d.risk.desired_target)
                else d.risk.desired_target,
                "approved_target": d.risk.approved_target,
                "order_placed": d.risk.order_placed,
                "order_kind": None
                if order is None
                else ("kill_switch" if order.kind == kernels.ORDER_KILL_SWITCH else "strategy"),
                "estimated_qty": str(d.estimated_qty),
                "reference_price": str(d.bar.close),
                "fill_rule": "next_open",
                "whole_shares": True,
                "costs": agent.costs.to_dict(),
            },
            "order_id": None if order is None else order.client_order_id,
            "latencies": {
                "inference_us": rec["latency_us"],
                "decision_us": d.latency_us,
                "backend": rec["backend"],
            },
        }

    # -- on_order -------------------------------------------------------------------------
    def on_orders(
        self,
        store: ChainStore,
        orders: Sequence[Order],
        sink: Sink,
        *,
        session: ChainSession | None = None,
    ) -> None:
        """The paper broker accepts the orders (they fill at the next bar's open).

        Raises:
            PermanentError: unknown agent or symbol, or an order no decision recorded.
        """
        if not orders:
            return
        if session is not None:
            session.flush(books=False)  # the orders this cascade decided, before reading them
        agents = store.agents({o.agent_id for o in orders})
        known = store.existing_orders({o.client_order_id for o in orders})
        for o in orders:
            _require_trading_agent(agents, f"order {o.client_order_id}", o.agent_id, o.symbol)
            if o.client_order_id not in known:
                raise PermanentError(
                    f"order {o.client_order_id} was not placed by a recorded decision; the paper "
                    "broker only executes the chain's own orders"
                )
        store.accept_orders([o.client_order_id for o in orders])

    # -- on_fill --------------------------------------------------------------------------
    def on_fills(
        self,
        store: ChainStore,
        fills: Sequence[Fill],
        sink: Sink,
        *,
        session: ChainSession | None = None,
    ) -> None:
        """Apply the books' new fills to positions, cash ledger and trades; refresh the
        leaderboard.

        Raises:
            PermanentError: unknown agent or symbol, or a fill the paper broker never made.
        """
        if not fills:
            return
        if session is not None:
            session.flush(books=False)  # the fills this cascade executed, before reading them
        agents = store.agents({f.agent_id for f in fills})
        known = store.existing_fills({f.fill_id for f in fills})
        for f in fills:
            _require_trading_agent(agents, f"fill {f.fill_id}", f.agent_id, f.symbol)
            if f.fill_id not in known:
                raise PermanentError(f"fill {f.fill_id} was not executed by the paper broker")
        projections = store.lock_projections({(f.agent_id, f.symbol) for f in fills})
        balances = store.cash_balances({p.agent_id for p in projections})
        positions: list[dict[str, Any]] = []
        cash_rows: list[dict[str, Any]] = []
        trades: list[dict[str, Any]] = []
        for proj in projections:
            if not proj.fills:
                continue
            self._project(proj, balances, positions, cash_rows, trades)
        self._fault("fills_applied")
        store.save_projection(positions, cash_rows, trades)
        for row in store.refresh_leaderboard({p.agent_id for p in projections if p.fills}):
            sink.mirror("leaderboard", str(row["agent_id"]), row)

    @staticmethod
    def _project(
        proj: FillProjection,
        balances: dict[UUID, Decimal],
        positions: list[dict[str, Any]],
        cash_rows: list[dict[str, Any]],
        trades: list[dict[str, Any]],
    ) -> None:
        from stocktrade.domain.ledger import LEDGER_CONTEXT, localcontext
        from stocktrade.domain.orders import Fill as DomainFill
        from stocktrade.services.paper_book import lots_of, restore_ledger

        ledger = restore_ledger(
            proj.symbol, Decimal(0), Decimal(0), proj.lots, proj.realised_pnl, proj.fees_paid
        )
        balance = balances.get(proj.agent_id, Decimal(0))
        last_price = None
        seq = proj.fill_seq
        for f in proj.fills:
            fill = DomainFill(
                fill_id=f["id"],
                order_id=f["client_order_id"],
                symbol=proj.symbol,
                side=Side(f["side"]),
                qty=f["qty"],
                price=f["price"],
                fee=f["fee"],
                ts=f["ts"],
            )
            closed = ledger.apply(fill)
            with localcontext(LEDGER_CONTEXT):
                amount = -fill.signed_qty * fill.price
                balance += amount
                cash_rows.append(
                    {
                        "agent_id": proj.agent_id,
                        "ts": fill.ts,
                        "amount": amount,
                        "balance": balance,
                        "kind": fill.side.value,
                        "ref": fill.fill_id,
                    }
                )
                if fill.fee:
                    balance -= fill.fee
                    cash_rows.append(
                        {
                            "agent_id": proj.agent_id,
                            "ts": fill.ts,
                            "amount": -fill.fee,
                            "balance": balance,
                            "kind": "fee",
                            "ref": fill.fill_id,
                        }
                    )
            for i, t in enumerate(closed):
                trades.append(
                    {
                        "agent_id": proj.agent_id,
                        "symbol": proj.symbol,
                        "exit_fill_id": fill.fill_id,
                        "piece": i,
                        "side": t.side.value,
                        "qty": t.qty,
                        "entry_ts": t.entry_ts,
                        "entry_price": t.entry_price,
                        "exit_ts": t.exit_ts,
                        "exit_price": t.exit_price,
                        "fees": t.fees,
                        "pnl": t.pnl,
                        "entry_order_id": t.entry_order_id,
                        "exit_order_id": t.exit_order_id,
                    }
                )
            last_price = fill.price
            seq = int(f["seq"])
        balances[proj.agent_id] = balance
        lots = lots_of(ledger, proj.symbol)
        qty = ledger.position(proj.symbol)
        with localcontext(LEDGER_CONTEXT):
            held = sum((Decimal(lot["qty"]) for lot in lots), Decimal(0))
            cost = sum((Decimal(lot["qty"]) * Decimal(lot["price"]) for lot in lots), Decimal(0))
            avg = (cost / held).quantize(Decimal("1e-12")) if held else Decimal(0)
        positions.append(
            {
                "agent_id": proj.agent_id,
                "symbol": proj.symbol,
                "qty": qty,
                "avg_price": avg,
                "realized_pnl": ledger.realised_pnl,
                "fees_paid": ledger.fees_paid,
                "lots": lots,
                "last_price": last_price,
                "fill_seq": seq,
            }
        )

    # -- model-promoted -------------------------------------------------------------------
    def on_model_promoted(
        self,
        store: ChainStore,
        events: Sequence[ModelPromoted],
        sink: Sink,
        *,
        session: ChainSession | None = None,
    ) -> None:
        """Point the agents following each promoted policy at the new version and drop
        cached runtimes and strategies, so the next bar loads it."""
        for event in events:
            moved = store.follow_promotion(event)
            log.info(
                "model promoted",
                extra={
                    "agent_name": event.agent_name,
                    "version": event.version,
                    "model_version_id": str(event.model_version_id),
                    "agents": [str(a) for a in moved],
                },
            )
        if self.runtimes is not None:
            self.runtimes.evict()
        self.forget()


def _require_trading_agent(agents: Mapping[Any, Any], what: str, agent_id: Any, symbol: str) -> None:
    """Refuse an order or fill whose agent is unknown or does not trade its symbol."""
    agent = agents.get(agent_id)
    if agent is None:
        raise PermanentError(f"{what} names unknown agent {agent_id}")
    if symbol not in agent.symbols:
        raise PermanentError(
            f"{what}: agent {agent.name!r} does not trade the unknown symbol {symbol!r}"
        )
