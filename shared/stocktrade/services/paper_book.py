"""One agent's paper book of one symbol, advanced by the live chain in two steps per bar.

The backtest advances a book with :meth:`stocktrade.services.trading.TradingCore.on_bar`:
day reset, fill the pending order at the open, ask the strategy, mark at the close, risk
gate, submit the next order. The chain splits that bar into the two handlers that own the
parts, and persists everything in between (:class:`BookState`, one ``chain_books`` row):

1. :func:`step_bar` (``on_bar``): the paper broker fills the order pending from the previous
   bar at this bar's open (:class:`~stocktrade.sim.broker.SimulatedBroker`,
   the backtest's broker: same kernels, fees, slippage, sizing cash), then the strategy sees
   the bar and the position after that fill. Its answer waits in :attr:`BookState.signal`.
2. :func:`decide` (``on_signal``): :class:`~stocktrade.services.trading.TradingCore` runs the
   bar with a strategy that replays that answer and a broker with nothing pending: day reset,
   mark, kill switch, risk gate, and the order it submits becomes the book's pending order,
   filled by step 1 of the next bar.

Why this is the backtest exactly: the fill in step 1 is the call ``TradingCore`` makes first
(same broker method, same arguments, the same float "sizing cash" shadow of
:class:`~stocktrade.services.trading.RiskState` maintained by the same rule), and nothing
between that fill and the strategy call reads the day bookkeeping the core resets first.
Step 2 is ``TradingCore.on_bar`` itself. ``tests/integration/test_chain_divergence.py``
compares every order, fill and equity value with :func:`stocktrade.backtest.engine.run_backtest`.

Nothing here touches a database or a bus; the engine (:mod:`stocktrade.services.chain_engine`)
loads and stores :class:`BookState` and turns the results into rows and events.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from stocktrade.domain.bars import Bar, Timeframe
from stocktrade.domain.costs import CostModel, FillRule
from stocktrade.domain.ledger import Ledger, Trade
from stocktrade.domain.orders import Execution, Fill, OrderStatus, Side
from stocktrade.domain.risk import RiskLimits, RiskResult, decode_flags
from stocktrade.errors import ValidationError
from stocktrade.quant.features import IncrementalFeatures
from stocktrade.services.trading import Broker, RiskState, TradingCore, size_target
from stocktrade.sim import kernels
from stocktrade.strategies.base import BarInput, PositionView, Signal, Strategy

__all__ = [
    "BarStep",
    "BookConfig",
    "BookFill",
    "BookState",
    "Decided",
    "PendingOrder",
    "bar_from_dict",
    "bar_to_dict",
    "client_order_id",
    "decide",
    "ledger_of",
    "lots_of",
    "restore_ledger",
    "step_bar",
]

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class BookConfig:
    """How an agent's books trade (the agent's costs and limits; whole shares, next open).

    Attributes:
        costs: commission and slippage.
        limits: risk limits of each book.
        whole_shares: trade whole units only.
        jit: use the compiled kernels (False runs the same code uncompiled).
    """

    costs: CostModel = field(default_factory=CostModel)
    limits: RiskLimits = field(default_factory=RiskLimits)
    whole_shares: bool = True
    jit: bool = True

    def broker(self) -> Broker:
        """A paper broker with these settings and nothing pending: the backtest's
        :class:`~stocktrade.sim.broker.SimulatedBroker` (imported here, the
        one adapter the book needs; it is pure computation)."""
        from stocktrade.sim.broker import SimulatedBroker

        return SimulatedBroker(
            self.costs,
            fill_rule=FillRule.NEXT_OPEN,
            whole_shares=self.whole_shares,
            limits=self.limits,
            id_prefix="paper",
            jit=self.jit,
        )


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """An order decided on a bar, waiting for the next bar's open.

    Attributes:
        client_order_id: deterministic id (:func:`client_order_id`).
        target: target position (fraction of equity) it will be sized to.
        kind: why (``kernels.ORDER_STRATEGY`` or ``ORDER_KILL_SWITCH``).
        reason: human reason.
        bar_index: index of the deciding bar in the book.
        ts: time of the deciding bar.
    """

    client_order_id: str
    target: float
    kind: int
    reason: str
    bar_index: int
    ts: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_order_id": self.client_order_id,
            "target": self.target,
            "kind": self.kind,
            "reason": self.reason,
            "bar_index": self.bar_index,
            "ts": self.ts.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingOrder:
        return cls(
            str(data["client_order_id"]),
            float(data["target"]),
            int(data["kind"]),
            str(data["reason"]),
            int(data["bar_index"]),
            datetime.fromisoformat(data["ts"]),
        )


@dataclass(slots=True)
class BookState:
    """A book between two handler calls (one ``chain_books`` row).

    Attributes:
        agent_id, symbol, timeframe: whose book, of what.
        initial_cash: the book's starting cash.
        cash, lots, realised_pnl, fees_paid: the Decimal ledger (lots: open FIFO lots as
            dicts of strings).
        bars_seen: bars stepped so far (the cache version of the book's strategy).
        first_bar_ts, last_bar_ts: first and last bar stepped.
        decided_ts: last bar decided.
        risk_state: :meth:`RiskState.to_dict` (``None`` before the first bar).
        strategy_state: :func:`stocktrade.services.strategy_state.snapshot`.
        feature_state: the decision log's :class:`IncrementalFeatures` state.
        signal: the stepped bar awaiting its decision (see :func:`step_bar`).
        pending_order: the order awaiting its fill bar.
        fill_seq: fills executed so far.
        model_version_id: the policy version ``strategy_state`` belongs to.
        states_loaded: whether ``strategy_state`` and ``feature_state`` were read (a store
            skips them when the process holds the strategy in that very state already).
    """

    agent_id: UUID
    symbol: str
    timeframe: str
    initial_cash: Decimal
    cash: Decimal
    lots: list[dict[str, str]] = field(default_factory=list)
    realised_pnl: Decimal = _ZERO
    fees_paid: Decimal = _ZERO
    bars_seen: int = 0
    first_bar_ts: datetime | None = None
    last_bar_ts: datetime | None = None
    decided_ts: datetime | None = None
    risk_state: dict[str, Any] | None = None
    strategy_state: dict[str, Any] | None = None
    feature_state: dict[str, Any] | None = None
    signal: dict[str, Any] | None = None
    pending_order: dict[str, Any] | None = None
    fill_seq: int = 0
    model_version_id: UUID | None = None
    states_loaded: bool = True

    @property
    def key(self) -> tuple[UUID, str]:
        return (self.agent_id, self.symbol)

    def risk(self) -> RiskState:
        """The risk state (a new book starts like :class:`TradingCore` does)."""
        if self.risk_state is None:
            start = float(self.cash)
            return RiskState(day_start_equity=start, prev_equity=start, cash=start)
        return RiskState.from_dict(self.risk_state)


def client_order_id(agent_id: UUID, symbol: str, bar_ts: datetime) -> str:
    """The deterministic id of the order an agent's book decides on a bar (at most one)."""
    from stocktrade.schemas.events import derive_id

    return derive_id("order", agent_id, symbol, bar_ts)


def bar_to_dict(bar: Bar) -> dict[str, str]:
    """JSON-safe bar (decimal strings)."""
    return {
        "symbol": bar.symbol,
        "timeframe": bar.timeframe.value,
        "ts": bar.ts.isoformat(),
        "open": str(bar.open),
        "high": str(bar.high),
        "low": str(bar.low),
        "close": str(bar.close),
        "volume": str(bar.volume),
        "source": bar.source,
    }


def bar_from_dict(data: dict[str, str]) -> Bar:
    """Inverse of :func:`bar_to_dict`."""
    return Bar(
        data["symbol"],
        Timeframe(data["timeframe"]),
        datetime.fromisoformat(data["ts"]),
        Decimal(data["open"]),
        Decimal(data["high"]),
        Decimal(data["low"]),
        Decimal(data["close"]),
        Decimal(data["volume"]),
        data.get("source", ""),
    )


def restore_ledger(
    symbol: str,
    initial_cash: Decimal,
    cash: Decimal,
    lots: list[dict[str, str]],
    realised_pnl: Decimal,
    fees_paid: Decimal,
) -> Ledger:
    """A Decimal ledger holding ``lots`` (as :func:`lots_of` wrote them) and these totals.

    Each open lot is re-opened by a fill of its own quantity, price, fee and time (the
    ledger's public way to hold a lot); cash, realised P&L and fees are then set to the
    stored values, so the ledger is the one the previous handler left.
    """
    ledger = Ledger(initial_cash)
    for i, lot in enumerate(lots):
        ledger.apply(
            Fill(
                fill_id=f"lot-{i}",
                order_id=lot.get("order_id", ""),
                symbol=symbol,
                side=Side(lot["side"]),
                qty=Decimal(lot["qty"]),
                price=Decimal(lot["price"]),
                fee=Decimal(lot["fee"]),
                ts=datetime.fromisoformat(lot["ts"]),
            )
        )
    ledger.cash = cash
    ledger.realised_pnl = realised_pnl
    ledger.fees_paid = fees_paid
    ledger.fills = []
    ledger.trades = []
    return ledger


def lots_of(ledger: Ledger, symbol: str) -> list[dict[str, str]]:
    """The open FIFO lots of ``symbol`` as JSON-safe dicts (decimal strings)."""
    return [
        {
            "side": lot.side.value,
            "qty": str(lot.qty),
            "price": str(lot.price),
            "fee": str(lot.fee),
            "ts": lot.ts.isoformat(),
            "order_id": lot.order_id,
        }
        for lot in ledger.open_lots(symbol)
    ]


def ledger_of(book: BookState) -> Ledger:
    """The book's Decimal ledger, rebuilt from its stored cash and lots."""
    return restore_ledger(
        book.symbol, book.initial_cash, book.cash, book.lots, book.realised_pnl, book.fees_paid
    )


def _store_ledger(book: BookState, ledger: Ledger) -> None:
    book.cash = ledger.cash
    book.realised_pnl = ledger.realised_pnl
    book.fees_paid = ledger.fees_paid
    book.lots = lots_of(ledger, book.symbol)


_RISK_FIELDS = tuple(f.name for f in fields(RiskState))


def _risk_dict(state: RiskState) -> dict[str, Any]:
    """``RiskState.to_dict()`` without ``dataclasses.asdict``'s deep copy (hot path)."""
    return {name: getattr(state, name) for name in _RISK_FIELDS}


def _sizing_cash(state: RiskState, ledger: Ledger) -> float:
    """The float cash the kernels size with (the rule of :attr:`RiskState.cash`)."""
    ledger_cash = float(ledger.cash)
    shadow = state.cash
    if shadow is None or not abs(shadow - ledger_cash) <= 1e-9 * max(1.0, abs(ledger_cash)):
        state.cash = ledger_cash
        return ledger_cash
    return shadow


@dataclass(frozen=True, slots=True)
class BookFill:
    """What the paper broker did with a pending order at a bar's open.

    Attributes:
        seq: the book's execution number (1, 2, ...); only fills that traded get one.
        order: the pending order.
        status: ``FILLED`` or ``REJECTED`` (sized to nothing).
        fill: the fill (ids rewritten to the chain's), if any quantity traded.
        flags: fill-time risk flags (position caps, insufficient cash).
        bar_ts: the fill bar's time.
        trades: FIFO round trips the fill closed.
    """

    seq: int
    order: PendingOrder
    status: OrderStatus
    fill: Fill | None
    flags: int
    bar_ts: datetime
    trades: tuple[Trade, ...] = ()

    @property
    def risk_codes(self) -> list[str]:
        return [c.name for c in decode_flags(self.flags)]


@dataclass(frozen=True, slots=True)
class BarStep:
    """Step 1 of a bar: the open fill and the strategy's answer."""

    bar: Bar
    bar_index: int
    fills: tuple[BookFill, ...]
    signal: Signal
    features: dict[str, float | None]
    latency_us: float


@dataclass(frozen=True, slots=True)
class Decided:
    """Step 2 of a bar: the trading core's risk check, marks and the order it placed.

    Attributes:
        bar: the decided bar.
        bar_index: its index in the book.
        signal: the stored step-1 record (answer, features, latency).
        risk: the risk check (desired and approved target, events with codes and reasons).
        target_before: the target in force before the decision.
        order: the order placed (pending until the next open), if any.
        estimated_qty: signed units the order would trade at this close (the fill sizes it
            again at the next open).
        cash, position_qty, position_value, equity: the book at the close.
        halted: the kill switch has fired.
        state: the risk state after the bar.
        latency_us: time the decision took.
    """

    bar: Bar
    bar_index: int
    signal: dict[str, Any]
    risk: RiskResult
    target_before: float
    order: PendingOrder | None
    estimated_qty: Decimal
    cash: Decimal
    position_qty: Decimal
    position_value: Decimal
    equity: Decimal
    halted: bool
    state: RiskState
    latency_us: float


def _fill_pending(
    book: BookState, bar: Bar, state: RiskState, ledger: Ledger, config: BookConfig
) -> list[BookFill]:
    if book.pending_order is None:
        return []
    order = PendingOrder.from_dict(book.pending_order)
    broker = config.broker()
    broker_id = broker.submit_target(
        book.symbol,
        order.target,
        ts=order.ts,
        bar_index=order.bar_index,
        kind=order.kind,
        reason=order.reason,
    )
    executions: list[Execution] = broker.on_bar_open(
        book.symbol,
        open_=float(bar.open),
        high=float(bar.high),
        low=float(bar.low),
        ts=bar.ts,
        bar_index=state.bar_index,
        cash=ledger.cash,
        qty=ledger.position(book.symbol),
        sizing_cash=_sizing_cash(state, ledger),
    )
    out: list[BookFill] = []
    for ex in executions:
        if ex.order.client_order_id != broker_id:  # one order was submitted; never happens
            raise ValidationError(f"paper broker returned order {ex.order.client_order_id!r}")
        fill = ex.fill
        trades: tuple[Trade, ...] = ()
        if fill is not None:
            book.fill_seq += 1
            fill = replace(
                fill, fill_id=f"{order.client_order_id}-f1", order_id=order.client_order_id
            )
            trades = tuple(ledger.apply(fill))
        if ex.cash_after == ex.cash_after:  # priced: the kernel's new cash (TradingCore._track)
            state.cash = ex.cash_after
        out.append(
            BookFill(
                book.fill_seq if fill is not None else 0,
                order,
                ex.order.status,
                fill,
                ex.flags,
                bar.ts,
                trades,
            )
        )
    book.pending_order = None
    return out


def step_bar(
    book: BookState,
    bar: Bar,
    strategy: Strategy,
    features: IncrementalFeatures,
    config: BookConfig,
    *,
    backend: str = "python",
    model_version_id: UUID | None = None,
) -> BarStep:
    """Step 1 of ``bar``: fill the pending order at the open, then ask the strategy.

    ``book`` (and ``strategy``, ``features``) are updated in place; the strategy's answer
    is stored in :attr:`BookState.signal` for :func:`decide`.

    Raises:
        ValidationError: the book still has an undecided bar, or ``bar`` is not newer than
            the last bar stepped.
    """
    if book.signal is not None:
        raise ValidationError(
            f"book {book.agent_id}/{book.symbol} must decide bar {book.signal['bar']['ts']} "
            f"before stepping {bar.ts.isoformat()}"
        )
    if book.last_bar_ts is not None and bar.ts <= book.last_bar_ts:
        raise ValidationError(
            f"bar {bar.ts.isoformat()} is not after the book's last bar "
            f"{book.last_bar_ts.isoformat()}"
        )
    state = book.risk()
    ledger = ledger_of(book)
    fills = _fill_pending(book, bar, state, ledger, config)
    qty = ledger.position(book.symbol)
    o, h, lo, c, v = (
        float(bar.open),
        float(bar.high),
        float(bar.low),
        float(bar.close),
        float(bar.volume),
    )
    started = time.perf_counter()
    signal = strategy.on_bar(
        BarInput(state.bar_index, bar.ts, o, h, lo, c, v), PositionView(float(qty), state.target)
    )
    latency_us = (time.perf_counter() - started) * 1e6
    row = features.update(o, h, lo, c, v)
    names = features.spec.names()
    feats = {
        n: (None if math.isnan(x) else float(x)) for n, x in zip(names, row.tolist(), strict=True)
    }
    _store_ledger(book, ledger)
    if book.first_bar_ts is None:
        book.first_bar_ts = bar.ts
    book.last_bar_ts = bar.ts
    book.bars_seen += 1
    book.risk_state = _risk_dict(state)
    book.signal = {
        "bar": bar_to_dict(bar),
        "bar_index": state.bar_index,
        "target": None if math.isnan(signal.target) else float(signal.target),
        "action": int(signal.action),
        "probs": None if signal.probs is None else [float(p) for p in signal.probs],
        "latency_us": latency_us,
        "backend": backend,
        "model_version_id": None if model_version_id is None else str(model_version_id),
        "features": feats,
        "position_qty": str(qty),
        "cash": str(ledger.cash),
    }
    return BarStep(bar, state.bar_index, tuple(fills), signal, feats, latency_us)


class _ReplaySignal:
    """A strategy that answers with a signal computed earlier (step 1's)."""

    name = "replay"
    warmup = 0

    def __init__(self, signal: Signal) -> None:
        self._signal = signal

    def params(self) -> dict[str, Any]:
        return {}

    def reset(self) -> None:
        """Stateless."""

    def on_bar(self, bar: BarInput, position: PositionView) -> Signal:
        return self._signal


class _RecordingBroker:
    """A :class:`SimulatedBroker` that remembers what the core submitted."""

    def __init__(self, inner: Broker) -> None:
        self.inner = inner
        self.submitted: list[tuple[float, int, str, int, datetime]] = []

    @property
    def fill_rule(self) -> FillRule:
        return self.inner.fill_rule

    def submit_target(
        self,
        symbol: str,
        target: float,
        *,
        ts: datetime,
        bar_index: int,
        kind: int = kernels.ORDER_STRATEGY,
        reason: str = "",
    ) -> str:
        self.submitted.append((float(target), int(kind), reason, bar_index, ts))
        return self.inner.submit_target(
            symbol, target, ts=ts, bar_index=bar_index, kind=kind, reason=reason
        )

    def on_bar_open(self, symbol: str, **kw: Any) -> list[Execution]:
        return self.inner.on_bar_open(symbol, **kw)

    def on_bar_close(self, symbol: str, **kw: Any) -> list[Execution]:
        return self.inner.on_bar_close(symbol, **kw)

    def fill_now(self, symbol: str, **kw: Any) -> list[Execution]:
        return self.inner.fill_now(symbol, **kw)

    def expire(self, symbol: str, *, qty: Decimal = _ZERO) -> list[Execution]:
        return self.inner.expire(symbol, qty=qty)


def decide(book: BookState, config: BookConfig) -> Decided:
    """Step 2 of the stepped bar: :class:`TradingCore` decides on the stored answer.

    ``book`` is updated in place (risk state, pending order, decided time; the signal is
    consumed).

    Raises:
        ValidationError: the book has no stepped bar awaiting a decision.
    """
    if book.signal is None:
        raise ValidationError(f"book {book.agent_id}/{book.symbol} has no bar awaiting a decision")
    record = book.signal
    bar = bar_from_dict(record["bar"])
    target = math.nan if record["target"] is None else float(record["target"])
    probs = None if record["probs"] is None else tuple(float(p) for p in record["probs"])
    signal = Signal(target, int(record["action"]), probs)
    state = book.risk()
    if state.bar_index != int(record["bar_index"]):
        raise ValidationError(
            f"book {book.agent_id}/{book.symbol} is at bar {state.bar_index}, the stored signal "
            f"is for bar {record['bar_index']}"
        )
    target_before = state.target
    ledger = ledger_of(book)
    broker = _RecordingBroker(config.broker())
    started = time.perf_counter()
    core = TradingCore(
        book.symbol,
        _ReplaySignal(signal),
        ledger=ledger,
        broker=broker,
        limits=config.limits,
        fill_rule=FillRule.NEXT_OPEN,
        jit=config.jit,
        state=state,
    )
    step = core.on_bar(bar)
    latency_us = (time.perf_counter() - started) * 1e6
    if step.executions:  # nothing is pending and nothing fills at the close: never happens
        raise ValidationError(f"unexpected executions while deciding {bar.ts.isoformat()}")
    order: PendingOrder | None = None
    estimated = _ZERO
    if broker.submitted:
        placed_target, kind, reason, bar_index, ts = broker.submitted[-1]
        order = PendingOrder(
            client_order_id(book.agent_id, book.symbol, bar.ts),
            placed_target,
            kind,
            reason,
            bar_index,
            ts,
        )
        estimated, _flags = size_target(
            ledger.cash,
            ledger.position(book.symbol),
            placed_target,
            bar.close,
            costs=config.costs,
            limits=config.limits,
            whole_shares=config.whole_shares,
            high=bar.high,
            low=bar.low,
        )
    _store_ledger(book, ledger)
    book.risk_state = _risk_dict(core.state)
    book.pending_order = None if order is None else order.to_dict()
    book.decided_ts = bar.ts
    book.signal = None
    return Decided(
        bar=bar,
        bar_index=int(record["bar_index"]),
        signal=record,
        risk=step.risk,
        target_before=target_before,
        order=order,
        estimated_qty=estimated,
        cash=step.cash,
        position_qty=step.position_qty,
        position_value=step.position_value,
        equity=step.equity,
        halted=step.halted,
        state=core.state,
        latency_us=latency_us,
    )
