"""Backtest results: per-bar curves (float64), orders, fills, FIFO trades and metrics.

Both engine paths (compiled fast path and bar-by-bar) produce the same raw records — per-bar
cash/position/equity arrays, one row per order, one row per risk code — and everything else is
derived from them on first access: Decimal :class:`~stocktrade.domain.orders.Order` and
:class:`~stocktrade.domain.orders.Fill` objects, the FIFO :class:`~stocktrade.domain.ledger.Trade`
list (by replaying the fills through a Decimal :class:`~stocktrade.domain.ledger.Ledger`),
metrics and DataFrames. So a 1M-bar run costs nothing for objects nobody reads.

Money in orders, fills, trades and :attr:`BacktestResult.final_equity` is ``Decimal``; the
per-bar curves are float64 and agree with the Decimal ledger to ~1e-12 relative
(:meth:`BacktestResult.verify` checks every bar, 1e-9 by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from stocktrade.domain.ledger import LEDGER_CONTEXT, Ledger, Trade
from stocktrade.domain.orders import Fill, Order, OrderStatus, Side, to_decimal
from stocktrade.domain.risk import RiskCode, RiskEvent, RiskLimits, describe
from stocktrade.errors import StocktradeError
from stocktrade.quant.metrics import compute_metrics
from stocktrade.sim import kernels

if TYPE_CHECKING:
    import pandas as pd

    from stocktrade.backtest.config import BacktestConfig

__all__ = ["BacktestResult", "BookResult", "OrderRecords", "VerificationError"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_REASONS = {
    kernels.ORDER_STRATEGY: "strategy target",
    kernels.ORDER_KILL_SWITCH: "kill switch",
    kernels.ORDER_END_OF_DATA: "end of data",
}


class VerificationError(StocktradeError, AssertionError):
    """A result failed :meth:`BacktestResult.verify` (a bug in the engine, never user error)."""


def to_datetime(ts: np.datetime64) -> datetime:
    """``datetime64[ns]`` (UTC) -> aware :class:`datetime` (microsecond precision)."""
    return _EPOCH + timedelta(
        microseconds=int(ts.astype("datetime64[ns]").astype(np.int64)) // 1000
    )


@dataclass(frozen=True, eq=False)
class OrderRecords:
    """One row per order, in submission order (the raw form both engine paths produce).

    Attributes:
        bar: index of the deciding bar.
        kind: ``kernels.ORDER_STRATEGY`` / ``ORDER_KILL_SWITCH`` / ``ORDER_END_OF_DATA``.
        target: target position the order was sized from.
        fill_bar: index of the fill bar, ``-1`` if it expired.
        qty: signed quantity traded (0 if rejected or expired).
        price: execution price (NaN if expired).
        fee: commission.
        flags: risk flags raised at fill time (or ``NO_NEXT_BAR``).
        pos_after: position right after the order's fill (unchanged if it did not fill).
    """

    bar: np.ndarray
    kind: np.ndarray
    target: np.ndarray
    fill_bar: np.ndarray
    qty: np.ndarray
    price: np.ndarray
    fee: np.ndarray
    flags: np.ndarray
    pos_after: np.ndarray

    def __len__(self) -> int:
        return int(self.bar.shape[0])

    @classmethod
    def from_rows(
        cls, rows: list[tuple[int, int, float, int, float, float, float, int, float]]
    ) -> OrderRecords:
        """Build from ``(bar, kind, target, fill_bar, qty, price, fee, flags, pos_after)`` rows."""
        cols: list[Any] = list(zip(*rows, strict=True)) if rows else [() for _ in range(9)]
        ints = (0, 1, 3, 7)
        return cls(
            *(
                np.asarray(c, dtype=np.int64 if i in ints else np.float64)
                for i, c in enumerate(cols)
            )
        )

    def equals(self, other: OrderRecords) -> bool:
        """Exact equality of every column (NaN equals NaN)."""
        return all(
            np.array_equal(getattr(self, f), getattr(other, f), equal_nan=f in ("target", "price"))
            for f in (
                "bar",
                "kind",
                "target",
                "fill_bar",
                "qty",
                "price",
                "fee",
                "flags",
                "pos_after",
            )
        )


@dataclass(frozen=True, eq=False)
class BookResult:
    """One symbol's book.

    Attributes:
        symbol: the instrument.
        timeframe: bar timeframe (``"1d"``, ...).
        ts: bar times, ``datetime64[ns]`` UTC.
        close: closes (the marks).
        cash: cash after each bar.
        qty: position after each bar (units, signed).
        equity: cash + position marked at the close, after each bar.
        initial_cash: the book's starting cash.
        records: the orders.
        event_bar, event_code: one row per risk code raised (bar index, :class:`RiskCode`).
        limits: the risk limits (for reasons).
        id_prefix: prefix of order ids.
    """

    symbol: str
    timeframe: str
    ts: np.ndarray
    close: np.ndarray
    cash: np.ndarray
    qty: np.ndarray
    equity: np.ndarray
    initial_cash: Decimal
    records: OrderRecords
    event_bar: np.ndarray
    event_code: np.ndarray
    limits: RiskLimits = field(default_factory=RiskLimits)
    id_prefix: str = "bt"

    @property
    def position_value(self) -> np.ndarray:
        """Signed position value at each close."""
        return self.qty * self.close

    def order_id(self, k: int) -> str:
        """Client order id of order row ``k``."""
        return f"{self.id_prefix}-{self.symbol}-{k + 1:08d}"

    @cached_property
    def _times(self) -> list[datetime]:
        return [to_datetime(x) for x in self.ts]

    @cached_property
    def _fill_rows(self) -> list[tuple[int, Fill]]:
        # Fill quantities are position differences in Decimal (exact conversions of the
        # kernel's float positions), so the ledger's position is always exactly the float
        # position; with fractional shares this avoids 1e-17 dust lots. A float trade too
        # small to move the float position (fractional shares only) books no fill.
        r = self.records
        out: list[tuple[int, Fill]] = []
        pos = Decimal(0)
        for k in range(len(r)):
            if r.fill_bar[k] < 0 or float(r.qty[k]) == 0.0:
                continue
            after = to_decimal(float(r.pos_after[k]))
            q = after - pos
            pos = after
            if q == 0:
                continue
            oid = self.order_id(k)
            out.append(
                (
                    k,
                    Fill(
                        fill_id=f"{oid}-f1",
                        order_id=oid,
                        symbol=self.symbol,
                        side=Side.BUY if q > 0 else Side.SELL,
                        qty=abs(q),
                        price=to_decimal(float(r.price[k])),
                        fee=to_decimal(float(r.fee[k])),
                        ts=self._times[int(r.fill_bar[k])],
                    ),
                )
            )
        return out

    @property
    def fills(self) -> list[Fill]:
        """Fills, in time order."""
        return [f for _, f in self._fill_rows]

    @cached_property
    def orders(self) -> list[Order]:
        """Orders (filled, rejected or expired), in submission order."""
        r = self.records
        filled = {k: f for k, f in self._fill_rows}
        out = []
        for k in range(len(r)):
            target = float(r.target[k])
            fill = filled.get(k)
            if r.fill_bar[k] < 0:
                status = OrderStatus.EXPIRED
            elif fill is None:
                status = OrderStatus.REJECTED
            else:
                status = OrderStatus.FILLED
            if fill is not None:
                side, qty = fill.side, fill.qty
            else:
                side, qty = (Side.BUY if target > 0 else Side.SELL), Decimal(0)
            out.append(
                Order(
                    client_order_id=self.order_id(k),
                    symbol=self.symbol,
                    side=side,
                    qty=qty,
                    ts=self._times[int(r.bar[k])],
                    target_frac=to_decimal(target),
                    status=status,
                    reason=_REASONS.get(int(r.kind[k]), "strategy target"),
                )
            )
        return out

    @cached_property
    def ledger(self) -> Ledger:
        """A Decimal ledger holding every fill of the book."""
        ledger = Ledger(self.initial_cash)
        for f in self.fills:
            ledger.apply(f)
        return ledger

    @property
    def trades(self) -> list[Trade]:
        """Closed FIFO round trips."""
        return self.ledger.trades

    @property
    def final_equity(self) -> Decimal:
        """Decimal equity at the last close."""
        if len(self.close) == 0:
            return self.initial_cash
        return self.ledger.equity({self.symbol: to_decimal(float(self.close[-1]))})

    @cached_property
    def risk_events(self) -> list[RiskEvent]:
        """Every rejection or adjustment, with reasons."""
        return [
            RiskEvent(
                RiskCode(int(c)),
                describe(RiskCode(int(c)), self.limits),
                symbol=self.symbol,
                ts=self._times[int(b)],
                bar_index=int(b),
            )
            for b, c in zip(self.event_bar, self.event_code, strict=True)
        ]

    def verify(self, rel_tol: float = 1e-9) -> None:
        """Replay the fills bar by bar through a Decimal ledger and check every bar.

        Checks, at every bar: the Decimal ledger identity holds exactly
        (:meth:`Ledger.check_invariant`: cash + marked positions == initial + realised +
        unrealised − open fees, trades' P&L == realised P&L); the float curves satisfy
        cash + qty·close == equity and agree with the Decimal ledger within ``rel_tol`` of
        ``max(initial_cash, |equity|, |cash|, |position value|)`` (float rounding scales with
        the gross amounts, which exceed equity for leveraged or short books); the float
        position equals the ledger's exactly.

        Raises:
            VerificationError: a check fails (message names the bar).
        """
        ledger = Ledger(self.initial_cash)
        fills = self.fills
        fill_bars = [int(self.records.fill_bar[k]) for k, _ in self._fill_rows]
        j = 0
        scale0 = float(self.initial_cash)
        for t in range(len(self.close)):
            while j < len(fills) and fill_bars[j] == t:
                ledger.apply(fills[j])
                j += 1
            marks = {self.symbol: to_decimal(float(self.close[t]))}
            try:
                eq = ledger.check_invariant(marks)
            except AssertionError as exc:
                raise VerificationError(f"{self.symbol} bar {t}: {exc}") from exc
            f_eq = float(self.equity[t])
            value = float(self.qty[t] * self.close[t])
            tol = rel_tol * max(scale0, abs(f_eq), abs(float(self.cash[t])), abs(value))
            pos = float(ledger.position(self.symbol))
            checks = (
                ("equity vs Decimal ledger", f_eq, float(eq)),
                ("cash vs Decimal ledger", float(self.cash[t]), float(ledger.cash)),
                (
                    "cash + qty*close vs equity",
                    float(self.cash[t] + self.qty[t] * self.close[t]),
                    f_eq,
                ),
            )
            for what, a, b in checks:
                if not abs(a - b) <= tol:
                    raise VerificationError(
                        f"{self.symbol} bar {t}: {what}: {a!r} != {b!r} (tolerance {tol:.3g})"
                    )
            if pos != float(self.qty[t]):
                raise VerificationError(
                    f"{self.symbol} bar {t}: position {self.qty[t]!r} != ledger {pos!r}"
                )
        if j != len(fills):
            raise VerificationError(f"{self.symbol}: {len(fills) - j} fills after the last bar")


def _align(book: BookResult, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Book cash/value/equity on ``grid`` (carried forward; initial cash before its first bar)."""
    idx = np.searchsorted(book.ts, grid, side="right") - 1
    before = idx < 0
    safe = np.where(before, 0, idx)
    init = float(book.initial_cash)
    cash = np.where(before, init, book.cash[safe]) if len(book.ts) else np.full(len(grid), init)
    value = (
        np.where(before, 0.0, book.position_value[safe]) if len(book.ts) else np.zeros(len(grid))
    )
    equity = np.where(before, init, book.equity[safe]) if len(book.ts) else np.full(len(grid), init)
    return cash, value, equity


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """A finished backtest.

    Attributes:
        config: the configuration it ran with.
        strategy_name: the strategy's name.
        strategy_params: the strategy's parameters.
        books: one :class:`BookResult` per symbol, in run order.
        path: ``"fast"`` (vectorised targets), ``"policy_batch"`` (batched policy) or
            ``"step"`` (bar by bar).
        periods_per_year: used for the metrics.
    """

    config: BacktestConfig
    strategy_name: str
    strategy_params: dict[str, Any]
    books: dict[str, BookResult]
    path: str
    periods_per_year: float

    # -- portfolio curves --------------------------------------------------------------------

    @cached_property
    def _curves(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        books = list(self.books.values())
        if len(books) == 1:
            b = books[0]
            return b.ts, b.cash, b.position_value, b.equity
        grid = np.unique(np.concatenate([b.ts for b in books]))
        cash = np.zeros(len(grid))
        value = np.zeros(len(grid))
        equity = np.zeros(len(grid))
        for b in books:
            c, v, e = _align(b, grid)
            cash += c
            value += v
            equity += e
        return grid, cash, value, equity

    @property
    def ts(self) -> np.ndarray:
        """Portfolio time grid (union of the books' bars)."""
        return self._curves[0]

    @property
    def cash(self) -> np.ndarray:
        """Portfolio cash per bar."""
        return self._curves[1]

    @property
    def position_value(self) -> np.ndarray:
        """Portfolio signed position value per bar."""
        return self._curves[2]

    @property
    def equity(self) -> np.ndarray:
        """Portfolio equity per bar (sum of the books)."""
        return self._curves[3]

    @property
    def initial_cash(self) -> Decimal:
        """Sum of the books' starting cash."""
        with localcontext(LEDGER_CONTEXT):
            return sum((b.initial_cash for b in self.books.values()), Decimal(0))

    @property
    def final_equity(self) -> Decimal:
        """Decimal equity at the end (sum of the books' Decimal ledgers at their last close)."""
        with localcontext(LEDGER_CONTEXT):
            return sum((b.final_equity for b in self.books.values()), Decimal(0))

    # -- domain objects ----------------------------------------------------------------------

    @property
    def orders(self) -> list[Order]:
        """All orders, by symbol then submission."""
        return [o for b in self.books.values() for o in b.orders]

    @property
    def fills(self) -> list[Fill]:
        """All fills, by symbol then time."""
        return [f for b in self.books.values() for f in b.fills]

    @cached_property
    def trades(self) -> list[Trade]:
        """All closed FIFO trades, ordered by exit time (then symbol)."""
        out = [t for b in self.books.values() for t in b.trades]
        out.sort(key=lambda t: (t.exit_ts, t.symbol))
        return out

    @property
    def risk_events(self) -> list[RiskEvent]:
        """All risk rejections and adjustments."""
        return [e for b in self.books.values() for e in b.risk_events]

    @property
    def realised_pnl(self) -> Decimal:
        """Net realised P&L of all books."""
        with localcontext(LEDGER_CONTEXT):
            return sum((b.ledger.realised_pnl for b in self.books.values()), Decimal(0))

    # -- metrics and export ------------------------------------------------------------------

    @cached_property
    def metrics(self) -> dict[str, float]:
        """:func:`stocktrade.quant.metrics.compute_metrics` on the portfolio curve, plus
        ``initial_cash``, ``final_equity``, ``total_fees``, ``n_orders``, ``n_fills``."""
        ts, _cash, value, equity = self._curves
        init = float(self.initial_cash)
        prev = np.concatenate(([init], equity[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            returns = equity / prev - 1.0
            exposure = np.where(equity != 0, np.abs(value) / np.abs(equity), 0.0)
        notional = np.zeros(len(ts))
        for b in self.books.values():
            r = b.records
            done = (r.fill_bar >= 0) & (r.qty != 0)
            if done.any():
                at = np.searchsorted(ts, b.ts[r.fill_bar[done]])
                np.add.at(notional, at, np.abs(r.qty[done] * r.price[done]))
        pnls = np.array([float(t.pnl) for t in self.trades], dtype=np.float64)
        out = compute_metrics(
            returns,
            trade_pnls=pnls,
            traded_notional=notional,
            equity=equity,
            exposure=exposure,
            periods=self.periods_per_year,
        )
        fees = sum(float(b.records.fee.sum()) for b in self.books.values())
        out["initial_cash"] = init
        out["final_equity"] = float(self.final_equity)
        out["total_fees"] = fees
        out["n_orders"] = float(sum(len(b.records) for b in self.books.values()))
        out["n_fills"] = float(len(self.fills))
        return out

    def verify(self, rel_tol: float = 1e-9) -> None:
        """Run :meth:`BookResult.verify` on every book (see there)."""
        for b in self.books.values():
            b.verify(rel_tol)

    def to_frames(self) -> dict[str, pd.DataFrame]:
        """DataFrames for artifacts: ``equity`` (portfolio: ts, cash, position_value, equity),
        ``equity_by_symbol``, ``orders``, ``fills``, ``trades``, ``risk_events``.

        Money columns of orders/fills/trades hold ``Decimal`` objects (exact); curves are floats.
        """
        import pandas as pd

        ts, cash, value, equity = self._curves
        frames: dict[str, pd.DataFrame] = {
            "equity": pd.DataFrame(
                {
                    "ts": pd.DatetimeIndex(ts).tz_localize("UTC"),
                    "cash": cash,
                    "position_value": value,
                    "equity": equity,
                }
            )
        }
        parts = [
            pd.DataFrame(
                {
                    "symbol": b.symbol,
                    "ts": pd.DatetimeIndex(b.ts).tz_localize("UTC"),
                    "cash": b.cash,
                    "qty": b.qty,
                    "position_value": b.position_value,
                    "equity": b.equity,
                }
            )
            for b in self.books.values()
        ]
        frames["equity_by_symbol"] = pd.concat(parts, ignore_index=True)
        order_rows = []
        for b in self.books.values():
            r = b.records
            for k, o in enumerate(b.orders):
                fb = int(r.fill_bar[k])
                codes = [c.name for c in RiskCode if int(r.flags[k]) & c.flag]
                order_rows.append(
                    {
                        "client_order_id": o.client_order_id,
                        "symbol": o.symbol,
                        "ts": o.ts,
                        "side": o.side.value,
                        "qty": o.qty,
                        "target_frac": o.target_frac,
                        "status": o.status.value,
                        "reason": o.reason,
                        "fill_ts": b._times[fb] if fb >= 0 else None,
                        "fill_price": None
                        if math.isnan(r.price[k]) or o.qty == 0
                        else to_decimal(float(r.price[k])),
                        "fee": to_decimal(float(r.fee[k])),
                        "risk_codes": ";".join(codes),
                    }
                )
        frames["orders"] = pd.DataFrame(
            order_rows,
            columns=[
                "client_order_id",
                "symbol",
                "ts",
                "side",
                "qty",
                "target_frac",
                "status",
                "reason",
                "fill_ts",
                "fill_price",
                "fee",
                "risk_codes",
            ],
        )
        frames["fills"] = pd.DataFrame(
            [
                {
                    "fill_id": f.fill_id,
                    "order_id": f.order_id,
                    "symbol": f.symbol,
                    "ts": f.ts,
                    "side": f.side.value,
                    "qty": f.qty,
                    "price": f.price,
                    "fee": f.fee,
                }
                for f in self.fills
            ],
            columns=["fill_id", "order_id", "symbol", "ts", "side", "qty", "price", "fee"],
        )
        frames["trades"] = pd.DataFrame(
            [
                {
                    "symbol": t.symbol,
                    "side": "long" if t.is_long else "short",
                    "qty": t.qty,
                    "entry_ts": t.entry_ts,
                    "entry_price": t.entry_price,
                    "exit_ts": t.exit_ts,
                    "exit_price": t.exit_price,
                    "fees": t.fees,
                    "pnl": t.pnl,
                    "return_pct": t.return_pct,
                    "holding_time": t.holding_time,
                    "entry_order_id": t.entry_order_id,
                    "exit_order_id": t.exit_order_id,
                }
                for t in self.trades
            ],
            columns=[
                "symbol",
                "side",
                "qty",
                "entry_ts",
                "entry_price",
                "exit_ts",
                "exit_price",
                "fees",
                "pnl",
                "return_pct",
                "holding_time",
                "entry_order_id",
                "exit_order_id",
            ],
        )
        frames["risk_events"] = pd.DataFrame(
            [e.to_dict() for e in self.risk_events],
            columns=["code", "reason", "symbol", "ts", "bar_index"],
        )
        return frames
