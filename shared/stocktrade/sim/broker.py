"""The simulated (paper) broker: market orders filled by the shared kernels.

Orders are either *target* orders (``submit_target``: a target position as a fraction of
equity, sized into units at fill time from the fill price, cash and position, exactly as the
backtest fast path does) or plain quantity orders (``submit_qty``). They fill by the book's
:class:`~stocktrade.domain.costs.FillRule`: at the next bar's open (``NEXT_OPEN``, call
:meth:`SimulatedBroker.on_bar_open`) or at the deciding bar's close (``CLOSE``, call
:meth:`SimulatedBroker.on_bar_close`). Costs (commission, slippage) and position caps come from
:mod:`stocktrade.sim.kernels`, the same code as the backtest and the RL environment.

Cash and position go in as :class:`~decimal.Decimal` and fills come out as Decimal; floats
are used only inside the kernel call (converted with ``repr``, so the fill values are the
kernel's float64 results exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from stocktrade.domain.costs import CostModel, FillRule
from stocktrade.domain.orders import Execution, Fill, Order, OrderStatus, Side, to_decimal
from stocktrade.domain.risk import RiskLimits
from stocktrade.errors import ValidationError
from stocktrade.sim import kernels

__all__ = ["SimulatedBroker"]


@dataclass(slots=True)
class _Pending:
    order_id: str
    symbol: str
    kind: int
    target: float | None
    qty: float | None
    ts: datetime
    bar_index: int
    reason: str


_NAN = float("nan")


class SimulatedBroker:
    """Paper broker over the shared fill rules.

    Args:
        costs: commission and slippage.
        fill_rule: when market orders fill.
        whole_shares: trade whole units only.
        limits: position caps (``max_position_qty``, ``max_notional``) and ``allow_short``
            applied when a target order is sized.
        id_prefix: prefix of the deterministic order ids (``{prefix}-{symbol}-{seq:08d}``).
        jit: use the compiled kernels (False runs the same code uncompiled: no JIT
            compile on a cold start).
    """

    def __init__(
        self,
        costs: CostModel,
        *,
        fill_rule: FillRule = FillRule.NEXT_OPEN,
        whole_shares: bool = True,
        limits: RiskLimits | None = None,
        id_prefix: str = "sim",
        jit: bool = True,
    ) -> None:
        self.costs = costs
        self.fill_rule = FillRule(fill_rule)
        self.whole_shares = bool(whole_shares)
        self.limits = limits or RiskLimits()
        self.id_prefix = id_prefix
        self._cost_args = costs.kernel_args()
        risk = self.limits.kernel_args()
        self._allow_short = bool(risk["allow_short"])
        self._max_qty = float(risk["max_qty"])
        self._max_notional = float(risk["max_notional"])
        self._execute_target: Any = (
            kernels.execute_target_limited if jit else kernels.execute_target_limited.py_func
        )
        self._execute_qty: Any = kernels.execute_qty if jit else kernels.execute_qty.py_func
        self._pending: dict[str, list[_Pending]] = {}
        self._seq = 0

    # -- submission --------------------------------------------------------------------------

    def _next_id(self, symbol: str) -> str:
        self._seq += 1
        return f"{self.id_prefix}-{symbol}-{self._seq:08d}"

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
        """Queue a target order; returns its client order id."""
        if target != target:
            raise ValidationError(f"target must be a number, found NaN for {symbol}")
        oid = self._next_id(symbol)
        self._pending.setdefault(symbol, []).append(
            _Pending(oid, symbol, kind, float(target), None, ts, bar_index, reason)
        )
        return oid

    def submit_qty(
        self, symbol: str, qty: Decimal, *, ts: datetime, bar_index: int, reason: str = ""
    ) -> str:
        """Queue a signed quantity market order (positive buys); returns its client order id."""
        if qty == 0:
            raise ValidationError(f"order quantity must be non-zero, found {qty} for {symbol}")
        oid = self._next_id(symbol)
        self._pending.setdefault(symbol, []).append(
            _Pending(oid, symbol, kernels.ORDER_STRATEGY, None, float(qty), ts, bar_index, reason)
        )
        return oid

    def has_pending(self, symbol: str) -> bool:
        """True if ``symbol`` has orders waiting for a fill."""
        return bool(self._pending.get(symbol))

    # -- fills -------------------------------------------------------------------------------

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
        sizing_cash: float | None = None,
    ) -> list[Execution]:
        """Fill pending orders at this bar's open (``NEXT_OPEN`` only; else nothing).

        ``cash``/``qty`` are the book's (Decimal); ``sizing_cash`` optionally overrides the
        float cash the kernel sizes with (the core's float shadow, see
        :class:`stocktrade.services.trading.RiskState`).
        """
        if self.fill_rule is not FillRule.NEXT_OPEN:
            return []
        return self._fill_all(symbol, open_, high, low, ts, bar_index, cash, qty, sizing_cash)

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
        sizing_cash: float | None = None,
    ) -> list[Execution]:
        """Fill pending orders at this bar's close (``CLOSE`` only; else nothing)."""
        if self.fill_rule is not FillRule.CLOSE:
            return []
        return self._fill_all(symbol, close, high, low, ts, bar_index, cash, qty, sizing_cash)

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
        sizing_cash: float | None = None,
    ) -> list[Execution]:
        """Fill pending orders at ``price`` whatever the fill rule (e.g. closing at the end)."""
        return self._fill_all(symbol, price, high, low, ts, bar_index, cash, qty, sizing_cash)

    def expire(self, symbol: str, *, qty: Decimal = Decimal(0)) -> list[Execution]:
        """Cancel pending orders of ``symbol`` (no bar is left to fill them); ``qty`` is the
        position held, reported as the position after the (non-)fill."""
        out = []
        for p in self._pending.pop(symbol, []):
            side = (
                Side.BUY if (p.target if p.target is not None else p.qty or 0.0) > 0 else Side.SELL
            )
            order = self._order(p, side, Decimal(0), OrderStatus.EXPIRED)
            out.append(
                Execution(
                    order,
                    None,
                    kernels.FLAG_NO_NEXT_BAR,
                    p.bar_index,
                    -1,
                    p.kind,
                    _NAN if p.target is None else p.target,
                    0.0,
                    _NAN,
                    0.0,
                    float(qty),
                    _NAN,
                )
            )
        return out

    def _order(self, p: _Pending, side: Side, qty: Decimal, status: OrderStatus) -> Order:
        return Order(
            client_order_id=p.order_id,
            symbol=p.symbol,
            side=side,
            qty=qty,
            ts=p.ts,
            target_frac=None if p.target is None else to_decimal(p.target),
            status=status,
            reason=p.reason,
        )

    def _fill_all(
        self,
        symbol: str,
        price: float,
        high: float,
        low: float,
        ts: datetime,
        bar_index: int,
        cash: Decimal,
        qty: Decimal,
        sizing_cash: float | None = None,
    ) -> list[Execution]:
        out: list[Execution] = []
        f_cash = float(cash) if sizing_cash is None else sizing_cash
        f_qty = float(qty)
        d_qty = qty
        cb, cps, sb, srf = self._cost_args
        for p in self._pending.pop(symbol, []):
            if p.target is not None:
                f_cash, f_qty, traded, fee, px, flags = self._execute_target(
                    f_cash,
                    f_qty,
                    p.target,
                    price,
                    high,
                    low,
                    cb,
                    cps,
                    sb,
                    srf,
                    self.whole_shares,
                    self._allow_short,
                    self._max_qty,
                    self._max_notional,
                )
            else:
                traded = float(p.qty or 0.0)
                f_cash, f_qty, fee, px = self._execute_qty(
                    f_cash, f_qty, traded, price, high, low, cb, cps, sb, srf
                )
                flags = 0
            # The fill quantity is the change of the exact Decimal images of the float
            # positions, so the ledger's position always equals the kernel's float position
            # (no fractional-share dust). A float trade too small to move the float position
            # (fractional shares only) books nothing.
            after = to_decimal(f_qty)
            q = after - d_qty
            d_qty = after
            if traded != 0.0 and q != 0:
                side = Side.BUY if q > 0 else Side.SELL
                order = self._order(p, side, abs(q), OrderStatus.FILLED)
                fill: Fill | None = Fill(
                    fill_id=f"{p.order_id}-f1",
                    order_id=p.order_id,
                    symbol=symbol,
                    side=side,
                    qty=abs(q),
                    price=to_decimal(px),
                    fee=to_decimal(fee),
                    ts=ts,
                )
            else:
                # Only an increase can size to nothing; it goes the target's way.
                side = Side.BUY if (p.target or 0.0) > 0 else Side.SELL
                order = self._order(p, side, Decimal(0), OrderStatus.REJECTED)
                fill = None
            out.append(
                Execution(
                    order,
                    fill,
                    int(flags),
                    p.bar_index,
                    bar_index,
                    p.kind,
                    _NAN if p.target is None else p.target,
                    traded,
                    px,
                    fee,
                    f_qty,
                    f_cash,
                )
            )
        return out
