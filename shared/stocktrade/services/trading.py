"""The bar-by-bar decision path: features -> strategy/policy -> risk -> sizing -> broker -> ledger.

:class:`TradingCore` runs one book (one symbol, one cash pool) one bar at a time, with
``Decimal`` at the boundary: bars may arrive as :class:`stocktrade.domain.bars.Bar` (Decimal
OHLCV, the live chain) or :class:`stocktrade.strategies.base.BarInput` (floats, the backtest),
cash and positions live in a Decimal :class:`~stocktrade.domain.ledger.Ledger`, and every
order, fill and risk event is a domain object. The arithmetic — risk gate, kill switch,
sizing, fees — is :mod:`stocktrade.sim.kernels`, the same code the compiled backtest loop
(:func:`stocktrade.sim.kernels.simulate`) runs, in the same order:

1. a new (UTC) day resets the daily order count and the day's opening equity (the equity
   marked at the previous bar's close);
2. ``NEXT_OPEN``: orders pending from the previous bar fill at this bar's open;
3. the strategy sees the bar and the position and answers a target (NaN = keep);
4. the book is marked at the close; if the day's loss reaches the limit, the kill switch
   flattens the book (bypassing the throttle) and halts it for good; otherwise the target goes
   through the risk gate (warm-up, long-only, throttle, halt) and, if it changed, becomes an
   order for the broker;
5. ``CLOSE``: the order fills at this bar's close; ``NEXT_OPEN`` on the last bar: it expires;
6. with ``close_at_end`` the last bar also closes any position at its close.

The strategy is called on every bar (also while halted) so its state never skips a bar.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from stocktrade.domain.bars import Bar
from stocktrade.domain.costs import CostModel, FillRule
from stocktrade.domain.ledger import Ledger, Trade
from stocktrade.domain.orders import Execution, Fill, to_decimal
from stocktrade.domain.risk import RiskEvent, RiskLimits, RiskResult, events_from_flags
from stocktrade.errors import ValidationError
from stocktrade.sim import kernels
from stocktrade.strategies.base import BarInput, PositionView, Signal, Strategy

__all__ = ["Broker", "RiskState", "StepResult", "TradingCore", "size_target", "utc_day"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_day(ts: datetime) -> int:
    """Days since 1970-01-01 of an aware timestamp, in UTC (the kill switch's 'day')."""
    if ts.tzinfo is None:
        raise ValidationError(
            f"timestamps must be timezone-aware UTC, found naive {ts.isoformat()}"
        )
    return (ts - _EPOCH).days


class Broker(Protocol):
    """The broker port the core drives (the simulated broker implements it)."""

    @property
    def fill_rule(self) -> FillRule: ...

    def submit_target(
        self,
        symbol: str,
        target: float,
        *,
        ts: datetime,
        bar_index: int,
        kind: int = ...,
        reason: str = ...,
    ) -> str: ...

    def on_bar_open(
        self,
        symbol: str,
        *,
        open_: float,
        high: float,
        low: float,
        ts: datetime,
        bar_index: int,
        cash: Decimal,
        qty: Decimal,
        sizing_cash: float | None = ...,
    ) -> list[Execution]: ...

    def on_bar_close(
        self,
        symbol: str,
        *,
        close: float,
        high: float,
        low: float,
        ts: datetime,
        bar_index: int,
        cash: Decimal,
        qty: Decimal,
        sizing_cash: float | None = ...,
    ) -> list[Execution]: ...

    def fill_now(
        self,
        symbol: str,
        *,
        price: float,
        high: float,
        low: float,
        ts: datetime,
        bar_index: int,
        cash: Decimal,
        qty: Decimal,
        sizing_cash: float | None = ...,
    ) -> list[Execution]: ...

    def expire(self, symbol: str, *, qty: Decimal = ...) -> list[Execution]: ...


@dataclass(slots=True)
class RiskState:
    """Risk bookkeeping of one book between bars (JSON-safe via :meth:`to_dict`).

    Attributes:
        target: target position in force (fraction of equity).
        halted: the kill switch has fired.
        last_order_bar: index of the bar of the last order (``kernels.NEVER`` if none).
        orders_today: orders placed on ``day``.
        day: UTC day of the last bar seen (None before the first bar).
        day_start_equity: equity at the close before ``day`` began.
        prev_equity: equity at the last close.
        bar_index: index of the next bar.
        cash: float shadow of the ledger's cash as the kernels computed it (None: take the
            ledger's). Sizing and the loss check use it, so the bar-by-bar path decides
            bit-identically to the compiled loop; it is dropped (re-read from the Decimal
            ledger) whenever it drifts more than 1e-9 relative from the ledger, e.g. after a
            cash movement the core did not make.
    """

    target: float = 0.0
    halted: bool = False
    last_order_bar: int = kernels.NEVER
    orders_today: int = 0
    day: int | None = None
    day_start_equity: float = 0.0
    prev_equity: float = 0.0
    bar_index: int = 0
    cash: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RiskState:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))


@dataclass(frozen=True, slots=True)
class StepResult:
    """Everything one bar did to the book (the decision log entry of the bar).

    Attributes:
        bar_index: index of the bar in the book's stream.
        ts: bar time.
        signal: the strategy's answer.
        risk: the risk check of that answer.
        executions: orders that filled, were rejected or expired during this bar, in order.
        trades: round trips closed by this bar's fills.
        events: every risk event of the bar (fill-time adjustments included), in order.
        cash, position_qty, position_value, equity: the book after the bar, marked at close.
        halted: the kill switch has fired (now or earlier).
    """

    bar_index: int
    ts: datetime
    signal: Signal
    risk: RiskResult
    executions: tuple[Execution, ...]
    trades: tuple[Trade, ...]
    events: tuple[RiskEvent, ...]
    cash: Decimal
    position_qty: Decimal
    position_value: Decimal
    equity: Decimal
    halted: bool

    @property
    def fills(self) -> list[Fill]:
        """Fills of this bar."""
        return [e.fill for e in self.executions if e.fill is not None]


def size_target(
    cash: Decimal,
    qty: Decimal,
    target: float,
    price: Decimal,
    *,
    costs: CostModel,
    limits: RiskLimits | None = None,
    whole_shares: bool = True,
    high: Decimal | None = None,
    low: Decimal | None = None,
) -> tuple[Decimal, int]:
    """Units to trade now to move towards ``target`` at ``price`` (for brokers that need a
    quantity at submission). Same kernel as every fill.

    Returns:
        ``(signed quantity, risk flags)``.
    """
    lim = (limits or RiskLimits()).kernel_args()
    p = float(price)
    _cash, _qty, traded, _fee, _px, flags = kernels.execute_target_limited(
        float(cash),
        float(qty),
        float(target),
        p,
        float(high) if high is not None else p,
        float(low) if low is not None else p,
        *costs.kernel_args(),
        whole_shares,
        lim["allow_short"],
        lim["max_qty"],
        lim["max_notional"],
    )
    return to_decimal(traded), int(flags)


@dataclass(slots=True)
class _BarFloats:
    index: int
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    close_dec: Decimal


class TradingCore:
    """One book of one symbol, advanced bar by bar.

    Args:
        symbol: the instrument.
        strategy: decides targets.
        ledger: cash and positions (Decimal); its cash pool may be shared with other books.
        broker: executes orders (e.g. :class:`stocktrade.adapters.brokers.simulated.SimulatedBroker`
            built with the same costs, fill rule and limits).
        limits: risk limits.
        fill_rule: when orders fill (must match the broker's).
        close_at_end: flatten at the close of the bar passed with ``is_last=True``.
        check_invariants: verify the ledger identity exactly after every bar (tests).
        jit: use the compiled kernels (False: same code uncompiled, for cold starts).
        state: resume from a saved :class:`RiskState`.
    """

    def __init__(
        self,
        symbol: str,
        strategy: Strategy,
        *,
        ledger: Ledger,
        broker: Broker,
        limits: RiskLimits | None = None,
        fill_rule: FillRule = FillRule.NEXT_OPEN,
        close_at_end: bool = False,
        check_invariants: bool = False,
        jit: bool = True,
        state: RiskState | None = None,
    ) -> None:
        self.symbol = symbol
        self.strategy = strategy
        self.ledger = ledger
        self.limits = limits or RiskLimits()
        self.fill_rule = FillRule(fill_rule)
        self.broker = broker
        if self.broker.fill_rule is not self.fill_rule:
            raise ValidationError(
                f"broker fills at {self.broker.fill_rule.value}, the core expects "
                f"{self.fill_rule.value}"
            )
        self.close_at_end = close_at_end
        self.check_invariants = check_invariants
        k = self.limits.kernel_args()
        self._warmup = int(k["warmup_bars"])
        self._allow_short = bool(k["allow_short"])
        self._min_bars = int(k["min_bars_between_orders"])
        self._max_per_day = int(k["max_orders_per_day"])
        self._max_loss = float(k["max_daily_loss"])
        self._max_loss_frac = float(k["max_daily_loss_frac"])
        self._gate: Any = kernels.risk_gate if jit else kernels.risk_gate.py_func
        self._breached: Any = (
            kernels.daily_loss_breached if jit else kernels.daily_loss_breached.py_func
        )
        if state is None:
            start = float(ledger.cash)
            state = RiskState(day_start_equity=start, prev_equity=start, cash=start)
        self.state = state

    # -- helpers -----------------------------------------------------------------------------

    def _open(self, symbol: str, price: float, **kw: Any) -> list[Execution]:
        return self.broker.on_bar_open(symbol, open_=price, **kw)

    def _close(self, symbol: str, price: float, **kw: Any) -> list[Execution]:
        return self.broker.on_bar_close(symbol, close=price, **kw)

    def _now(self, symbol: str, price: float, **kw: Any) -> list[Execution]:
        return self.broker.fill_now(symbol, price=price, **kw)

    def _floats(self, bar: Bar | BarInput) -> _BarFloats:
        if isinstance(bar, Bar):
            if bar.symbol != self.symbol:
                raise ValidationError(f"bar for {bar.symbol!r} sent to the {self.symbol!r} book")
            return _BarFloats(
                self.state.bar_index,
                bar.ts,
                float(bar.open),
                float(bar.high),
                float(bar.low),
                float(bar.close),
                float(bar.volume),
                bar.close,
            )
        return _BarFloats(
            self.state.bar_index,
            bar.ts,
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            to_decimal(bar.close),
        )

    def _apply(
        self,
        executions: list[Execution],
        b: _BarFloats,
        events: list[RiskEvent],
        trades: list[Trade],
    ) -> None:
        for ex in executions:
            if ex.fill is not None:
                trades.extend(self.ledger.apply(ex.fill))
            if ex.flags:
                events.extend(
                    events_from_flags(
                        ex.flags, self.limits, symbol=self.symbol, ts=b.ts, bar_index=b.index
                    )
                )

    def _cash_qty(self) -> tuple[Decimal, Decimal]:
        return self.ledger.cash, self.ledger.position(self.symbol)

    def _float_cash(self) -> float:
        """The float cash the kernels work with: the shadow while it tracks the ledger."""
        ledger_cash = float(self.ledger.cash)
        shadow = self.state.cash
        if shadow is None or not abs(shadow - ledger_cash) <= 1e-9 * max(1.0, abs(ledger_cash)):
            self.state.cash = ledger_cash
            return ledger_cash
        return shadow

    def _track(self, executions: list[Execution]) -> None:
        for ex in executions:
            if ex.cash_after == ex.cash_after:  # priced (not NaN): the kernel's new cash
                self.state.cash = ex.cash_after

    def _fill(
        self,
        method: Any,
        b: _BarFloats,
        price: float,
        events: list[RiskEvent],
        trades: list[Trade],
        executions: list[Execution],
    ) -> None:
        cash, qty = self._cash_qty()
        done = method(
            self.symbol,
            price,
            high=b.high,
            low=b.low,
            ts=b.ts,
            bar_index=b.index,
            cash=cash,
            qty=qty,
            sizing_cash=self._float_cash(),
        )
        self._apply(done, b, events, trades)
        self._track(done)
        executions.extend(done)

    # -- the bar -----------------------------------------------------------------------------

    def on_bar(self, bar: Bar | BarInput, *, is_last: bool = False) -> StepResult:
        """Advance the book by one bar (see the module docs for the exact sequence).

        Args:
            bar: the bar, closed.
            is_last: no further bar will come (backtest end): a ``NEXT_OPEN`` order placed now
                expires, and ``close_at_end`` flattens the book.
        """
        st = self.state
        b = self._floats(bar)
        t = b.index
        executions: list[Execution] = []
        events: list[RiskEvent] = []
        trades: list[Trade] = []

        day = utc_day(b.ts)
        if st.day != day:
            st.day = day
            st.orders_today = 0
            st.day_start_equity = st.prev_equity

        self._fill(self._open, b, b.open, events, trades, executions)

        qty = self.ledger.position(self.symbol)
        f_qty = float(qty)
        signal = self.strategy.on_bar(
            BarInput(t, b.ts, b.open, b.high, b.low, b.close, b.volume),
            PositionView(f_qty, st.target),
        )
        marks = {self.symbol: b.close_dec}
        equity = self._float_cash() + f_qty * b.close

        kind = kernels.ORDER_STRATEGY
        new_order = False
        desired = float(signal.target)
        decision_events: list[RiskEvent] = []
        if not st.halted and self._breached(
            st.day_start_equity, equity, self._max_loss, self._max_loss_frac
        ):
            st.halted = True
            decision_events.extend(
                events_from_flags(
                    kernels.FLAG_KILL_SWITCH, self.limits, symbol=self.symbol, ts=b.ts, bar_index=t
                )
            )
            if st.target != 0.0 or qty != 0:
                st.target = 0.0
                new_order = True
                kind = kernels.ORDER_KILL_SWITCH
            approved = st.target
        else:
            approved, flags = self._gate(
                desired,
                st.target,
                t,
                st.halted,
                st.last_order_bar,
                st.orders_today,
                self._warmup,
                self._allow_short,
                self._min_bars,
                self._max_per_day,
            )
            if flags:
                decision_events.extend(
                    events_from_flags(flags, self.limits, symbol=self.symbol, ts=b.ts, bar_index=t)
                )
            if approved != st.target:
                st.target = approved
                new_order = True
        events.extend(decision_events)
        risk = RiskResult(desired, st.target, new_order, tuple(decision_events))

        if new_order:
            reason = "kill switch" if kind == kernels.ORDER_KILL_SWITCH else "strategy target"
            self.broker.submit_target(
                self.symbol, st.target, ts=b.ts, bar_index=t, kind=kind, reason=reason
            )
            st.last_order_bar = t
            st.orders_today += 1
            if self.fill_rule is FillRule.CLOSE:
                self._fill(self._close, b, b.close, events, trades, executions)
            elif is_last:
                expired = self.broker.expire(self.symbol, qty=self.ledger.position(self.symbol))
                self._apply(expired, b, events, trades)
                executions.extend(expired)

        if is_last and self.close_at_end and self.ledger.position(self.symbol) != 0:
            self.broker.submit_target(
                self.symbol,
                0.0,
                ts=b.ts,
                bar_index=t,
                kind=kernels.ORDER_END_OF_DATA,
                reason="end of data",
            )
            self._fill(self._now, b, b.close, events, trades, executions)
            st.target = 0.0

        if self.check_invariants:
            self.ledger.check_invariant(marks)
        qty_after = self.ledger.position(self.symbol)
        value = self.ledger.market_value(marks)
        equity_dec = self.ledger.equity(marks)
        st.prev_equity = self._float_cash() + float(qty_after) * b.close
        st.bar_index = t + 1
        return StepResult(
            bar_index=t,
            ts=b.ts,
            signal=signal,
            risk=risk,
            executions=tuple(executions),
            trades=tuple(trades),
            events=tuple(events),
            cash=self.ledger.cash,
            position_qty=qty_after,
            position_value=value,
            equity=equity_dec,
            halted=st.halted,
        )
