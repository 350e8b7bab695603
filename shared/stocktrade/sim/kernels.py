"""The shared float64 trading kernels (numba): sizing, fees, risk gate, and the bar loop.

This module is THE implementation of execution and pre-trade risk. Every path runs it:

* the backtest fast path calls :func:`simulate` (a compiled loop over all bars);
* the bar-by-bar path (:mod:`stocktrade.services.trading`), the paper broker and the live
  chain call the per-bar pieces (:func:`risk_gate`, :func:`daily_loss_breached`,
  :func:`execute_target_limited`, :func:`execute_qty`) once per bar;
* the RL environment calls :func:`execute_target` per step.

:func:`simulate` is written as exactly that per-bar sequence, so the fast path and the step
path make the same decisions (tests check it). Each function is plain numba-compatible Python;
``fn.py_func`` runs the same source uncompiled where a JIT compile would hurt a cold start.

Float tolerance: cash and equity are float64. Compared with the Decimal ledger replaying the
same fills, they agree to about 1e-12 relative (a few ulps per fill); tests use 1e-9.

Conventions:

* ``target_frac``: desired position value as a fraction of equity at the fill price
  (1.0 = all-in long, 0 = flat, -1.0 = all-in short).
* Increasing a position spends a *budget* ``|target_frac| * equity - |current value|`` on
  ``floor(budget / (exec_price * (1 + commission_rate) + commission_per_share))`` units
  (no ``floor`` with fractional shares), so an all-in buy never overdraws cash, fees included.
  This is how backtesting.py sizes ``buy()`` with its default size.
* Reducing a position keeps ``floor(|target_frac| * equity / price)`` units (all of them
  closed when the target is 0); flipping sides first closes, then opens from the new equity.
* Risk flags are bit masks of :class:`stocktrade.domain.risk.RiskCode` (bit = code value).
"""

from __future__ import annotations

import math

import numpy as np

from stocktrade.jit import njit

__all__ = [
    "FLAG_HALTED",
    "FLAG_INSUFFICIENT_CASH",
    "FLAG_KILL_SWITCH",
    "FLAG_MAX_NOTIONAL",
    "FLAG_MAX_POSITION",
    "FLAG_NO_NEXT_BAR",
    "FLAG_SHORT_NOT_ALLOWED",
    "FLAG_THROTTLE_MAX_PER_DAY",
    "FLAG_THROTTLE_MIN_BARS",
    "FLAG_WARMUP",
    "NEVER",
    "ORDER_END_OF_DATA",
    "ORDER_KILL_SWITCH",
    "ORDER_STRATEGY",
    "daily_loss_breached",
    "exec_price",
    "execute_qty",
    "execute_target",
    "execute_target_limited",
    "fee_for",
    "risk_gate",
    "simulate",
]

# Bit flags; the bit index equals stocktrade.domain.risk.RiskCode (a test keeps them in step).
FLAG_WARMUP = 1 << 0
FLAG_HALTED = 1 << 1
FLAG_KILL_SWITCH = 1 << 2
FLAG_SHORT_NOT_ALLOWED = 1 << 3
FLAG_THROTTLE_MIN_BARS = 1 << 4
FLAG_THROTTLE_MAX_PER_DAY = 1 << 5
FLAG_MAX_POSITION = 1 << 6
FLAG_MAX_NOTIONAL = 1 << 7
FLAG_INSUFFICIENT_CASH = 1 << 8
FLAG_NO_NEXT_BAR = 1 << 9

# Why an order was placed (column ``kind`` of the order records).
ORDER_STRATEGY = 0
ORDER_KILL_SWITCH = 1
ORDER_END_OF_DATA = 2

#: "Last order bar" before any order: far enough back that no throttle applies.
NEVER = -(1 << 40)

# A sell never executes below this fraction of the reference price, whatever the slippage.
_MIN_PRICE_FRAC = 1e-6


@njit(cache=True)
def exec_price(
    side: int,
    price: float,
    bar_high: float,
    bar_low: float,
    slippage_bps: float,
    slippage_range_frac: float,
) -> float:
    """Execution price of a buy (``side > 0``) or sell (``side < 0``) at reference ``price``."""
    slip = price * (slippage_bps / 10000.0) + slippage_range_frac * (bar_high - bar_low)
    if side > 0:
        return price + slip
    px = price - slip
    floor_px = price * _MIN_PRICE_FRAC
    return px if px > floor_px else floor_px


@njit(cache=True)
def fee_for(
    qty_abs: float, price: float, commission_bps: float, commission_per_share: float
) -> float:
    """Commission for trading ``qty_abs`` units at execution price ``price``."""
    return qty_abs * price * (commission_bps / 10000.0) + qty_abs * commission_per_share


@njit(cache=True)
def execute_qty(
    cash: float,
    qty: float,
    order_qty: float,
    fill_price: float,
    bar_high: float,
    bar_low: float,
    commission_bps: float,
    commission_per_share: float,
    slippage_bps: float,
    slippage_range_frac: float,
) -> tuple[float, float, float, float]:
    """Fill a signed quantity: returns ``(new_cash, new_qty, fee, exec_price)``."""
    if order_qty == 0.0:
        return cash, qty, 0.0, fill_price
    side = 1 if order_qty > 0.0 else -1
    px = exec_price(side, fill_price, bar_high, bar_low, slippage_bps, slippage_range_frac)
    fee = fee_for(abs(order_qty), px, commission_bps, commission_per_share)
    return cash - order_qty * px - fee, qty + order_qty, fee, px


@njit(cache=True)
def execute_target_limited(
    cash: float,
    qty: float,
    target_frac: float,
    fill_price: float,
    bar_high: float,
    bar_low: float,
    commission_bps: float,
    commission_per_share: float,
    slippage_bps: float,
    slippage_range_frac: float,
    whole_shares: bool,
    allow_short: bool,
    max_qty: float,
    max_notional: float,
) -> tuple[float, float, float, float, float, int]:
    """Move the position towards ``target_frac`` of equity at ``fill_price``.

    Args:
        cash: cash before the fill.
        qty: signed position before the fill.
        target_frac: desired position value / equity (see module docs).
        fill_price: reference price (the open or close of the fill bar).
        bar_high: high of the fill bar (for range slippage).
        bar_low: low of the fill bar.
        commission_bps: commission in basis points of traded value.
        commission_per_share: commission per unit.
        slippage_bps: adverse slippage in basis points of ``fill_price``.
        slippage_range_frac: adverse slippage as a fraction of ``bar_high - bar_low``.
        whole_shares: trade whole units only.
        allow_short: when false a negative target is treated as flat.
        max_qty: cap on ``|position|`` after the fill (``inf`` = none).
        max_notional: cap on ``|position| * fill_price`` after the fill (``inf`` = none).

    Returns:
        ``(new_cash, new_qty, traded_qty, fee, exec_price, flags)``; ``traded_qty`` is signed,
        ``flags`` holds ``FLAG_SHORT_NOT_ALLOWED``, ``FLAG_MAX_POSITION``,
        ``FLAG_MAX_NOTIONAL``, ``FLAG_INSUFFICIENT_CASH`` as they applied.
    """
    flags = 0
    tf = target_frac
    if tf < 0.0 and not allow_short:
        tf = 0.0
        flags |= FLAG_SHORT_NOT_ALLOWED
    p = fill_price
    buy_px = exec_price(1, p, bar_high, bar_low, slippage_bps, slippage_range_frac)
    sell_px = exec_price(-1, p, bar_high, bar_low, slippage_bps, slippage_range_frac)
    rate = commission_bps / 10000.0
    new_cash = cash
    new_qty = qty
    traded = 0.0
    fee = 0.0
    px_used = p

    # Leg 1: close the whole position when the target is flat or on the other side.
    if new_qty != 0.0 and (tf == 0.0 or (tf > 0.0) != (new_qty > 0.0)):
        n = -new_qty
        px_used = buy_px if n > 0.0 else sell_px
        f = fee_for(abs(n), px_used, commission_bps, commission_per_share)
        new_cash = new_cash - n * px_used - f
        new_qty = 0.0
        traded += n
        fee += f

    # Leg 2: resize on the target's side.
    if tf != 0.0:
        s = 1.0 if tf > 0.0 else -1.0
        cap = max_qty
        cap_flag = FLAG_MAX_POSITION
        notional_cap = max_notional / p
        if notional_cap < cap:
            cap = notional_cap
            cap_flag = FLAG_MAX_NOTIONAL
        equity = new_cash + new_qty * p
        want_value = abs(tf) * equity
        held = abs(new_qty)
        if held * p > want_value or held > cap:
            keep = want_value / p
            if keep > cap:
                keep = cap
                flags |= cap_flag
            if whole_shares:
                keep = math.floor(keep)
            if keep < 0.0:
                keep = 0.0
            n_abs = held - keep
            if n_abs > 0.0:
                n = -s * n_abs
                px_used = buy_px if n > 0.0 else sell_px
                f = fee_for(n_abs, px_used, commission_bps, commission_per_share)
                new_cash = new_cash - n * px_used - f
                new_qty = new_qty + n
                traded += n
                fee += f
        else:
            px_side = buy_px if s > 0.0 else sell_px
            unit_cost = px_side + px_side * rate + commission_per_share
            budget = want_value - held * p
            n_abs = budget / unit_cost
            room = cap - held
            if n_abs > room:
                n_abs = room
                flags |= cap_flag
            if whole_shares:
                n_abs = math.floor(n_abs)
            if n_abs > 0.0:
                n = s * n_abs
                px_used = px_side
                f = fee_for(n_abs, px_used, commission_bps, commission_per_share)
                new_cash = new_cash - n * px_used - f
                new_qty = new_qty + n
                traded += n
                fee += f
            elif traded == 0.0 and budget > 0.0:
                flags |= FLAG_INSUFFICIENT_CASH
    return new_cash, new_qty, traded, fee, px_used, flags


@njit(cache=True)
def execute_target(
    cash: float,
    qty: float,
    target_frac: float,
    fill_price: float,
    bar_high: float,
    bar_low: float,
    commission_bps: float,
    commission_per_share: float,
    slippage_bps: float,
    slippage_range_frac: float,
    whole_shares: bool,
    allow_short: bool,
) -> tuple[float, float, float, float, float]:
    """:func:`execute_target_limited` without position caps (the RL environment's entry point).

    Returns:
        ``(new_cash, new_qty, traded_qty, fee, exec_price)``.
    """
    new_cash, new_qty, traded, fee, px, _flags = execute_target_limited(
        cash,
        qty,
        target_frac,
        fill_price,
        bar_high,
        bar_low,
        commission_bps,
        commission_per_share,
        slippage_bps,
        slippage_range_frac,
        whole_shares,
        allow_short,
        np.inf,
        np.inf,
    )
    return new_cash, new_qty, traded, fee, px


@njit(cache=True)
def risk_gate(
    desired: float,
    current_target: float,
    bar_index: int,
    halted: bool,
    last_order_bar: int,
    orders_today: int,
    warmup_bars: int,
    allow_short: bool,
    min_bars_between_orders: int,
    max_orders_per_day: int,
) -> tuple[float, int]:
    """Pre-trade check of a desired target.

    Args:
        desired: target asked for; NaN = no opinion (keep ``current_target``).
        current_target: target in force.
        bar_index: index of the deciding bar.
        halted: the kill switch has fired.
        last_order_bar: bar index of the last order (``NEVER`` if none).
        orders_today: orders placed so far on this bar's day.
        warmup_bars: no orders before this bar index.
        allow_short: long-only when false.
        min_bars_between_orders: throttle: bars that must pass between orders.
        max_orders_per_day: throttle: orders allowed per day.

    Returns:
        ``(approved_target, flags)``; an order is due when ``approved_target !=
        current_target``.
    """
    if math.isnan(desired):
        return current_target, 0
    d = desired
    clipped = d < 0.0 and not allow_short
    if clipped:
        d = 0.0
    if d == current_target:
        # Nothing to do; a clipped short that changes nothing is not worth an event.
        return current_target, 0
    flags = FLAG_SHORT_NOT_ALLOWED if clipped else 0
    if halted:
        return current_target, flags | FLAG_HALTED
    if bar_index < warmup_bars:
        return current_target, flags | FLAG_WARMUP
    if bar_index - last_order_bar < min_bars_between_orders:
        return current_target, flags | FLAG_THROTTLE_MIN_BARS
    if orders_today >= max_orders_per_day:
        return current_target, flags | FLAG_THROTTLE_MAX_PER_DAY
    return d, flags


@njit(cache=True)
def daily_loss_breached(
    day_start_equity: float, equity: float, max_daily_loss: float, max_daily_loss_frac: float
) -> bool:
    """True when the loss since the day's opening equity reaches either limit (``inf`` = off)."""
    loss = day_start_equity - equity
    if loss <= 0.0:
        return False
    return loss >= max_daily_loss or loss >= max_daily_loss_frac * day_start_equity


@njit(cache=True)
def simulate(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    day: np.ndarray,
    targets: np.ndarray,
    actions: np.ndarray,
    action_table: np.ndarray,
    use_actions: bool,
    initial_cash: float,
    commission_bps: float,
    commission_per_share: float,
    slippage_bps: float,
    slippage_range_frac: float,
    fill_on_close: bool,
    whole_shares: bool,
    close_at_end: bool,
    warmup_bars: int,
    allow_short: bool,
    min_bars_between_orders: int,
    max_orders_per_day: int,
    max_qty: float,
    max_notional: float,
    max_daily_loss: float,
    max_daily_loss_frac: float,
    out_cash: np.ndarray,
    out_qty: np.ndarray,
    out_equity: np.ndarray,
    ord_bar: np.ndarray,
    ord_kind: np.ndarray,
    ord_target: np.ndarray,
    ord_fill_bar: np.ndarray,
    ord_qty: np.ndarray,
    ord_price: np.ndarray,
    ord_fee: np.ndarray,
    ord_flags: np.ndarray,
    ord_pos: np.ndarray,
    ev_bar: np.ndarray,
    ev_flags: np.ndarray,
) -> tuple[int, int]:
    """Run one book over all bars (the fast path). See :mod:`stocktrade.services.trading`.

    Per bar ``t``: (1) a new day resets the order count and the day's opening equity;
    (2) a pending order fills at ``open[t]`` (``NEXT_OPEN``); (3) the book is marked at
    ``close[t]``; (4) the kill switch is checked, else the decision (``targets[t]``, or with
    ``use_actions`` the action ``actions[t, sign(position)+1]`` mapped by ``action_table``)
    goes through :func:`risk_gate`; a changed target becomes an order, filled at
    ``close[t]`` (``CLOSE``) or left pending for ``open[t+1]`` (expired on the last bar);
    (5) with ``close_at_end`` the book is flattened at the last close; (6) cash, position and
    equity are written out.

    Order records (``ord_*``, one row per order, ``ord_fill_bar = -1`` if not filled,
    ``ord_pos`` the position right after the order's fill) and
    risk events (``ev_*``) are written to caller-allocated arrays of length ``len(close)+1``
    and ``3*len(close)+2``.

    Returns:
        ``(n_orders, n_events)``.
    """
    n = close.shape[0]
    cash = initial_cash
    qty = 0.0
    eff_target = 0.0
    halted = False
    last_order = NEVER
    orders_today = 0
    cur_day = day[0] - 1 if n > 0 else 0
    day_start_equity = initial_cash
    prev_equity = initial_cash
    pending = -1
    n_ord = 0
    n_ev = 0
    for t in range(n):
        if day[t] != cur_day:
            cur_day = day[t]
            orders_today = 0
            day_start_equity = prev_equity
        if pending >= 0:
            cash, qty, traded, fee, px, fl = execute_target_limited(
                cash,
                qty,
                ord_target[pending],
                open_[t],
                high[t],
                low[t],
                commission_bps,
                commission_per_share,
                slippage_bps,
                slippage_range_frac,
                whole_shares,
                allow_short,
                max_qty,
                max_notional,
            )
            ord_fill_bar[pending] = t
            ord_qty[pending] = traded
            ord_price[pending] = px
            ord_fee[pending] = fee
            ord_flags[pending] |= fl
            ord_pos[pending] = qty
            if fl != 0:
                ev_bar[n_ev] = t
                ev_flags[n_ev] = fl
                n_ev += 1
            pending = -1
        equity = cash + qty * close[t]
        new_order = False
        kind = ORDER_STRATEGY
        if not halted and daily_loss_breached(
            day_start_equity, equity, max_daily_loss, max_daily_loss_frac
        ):
            halted = True
            ev_bar[n_ev] = t
            ev_flags[n_ev] = FLAG_KILL_SWITCH
            n_ev += 1
            if eff_target != 0.0 or qty != 0.0:
                eff_target = 0.0
                new_order = True
                kind = ORDER_KILL_SWITCH
        else:
            if use_actions:
                a = actions[t, (qty > 0.0) - (qty < 0.0) + 1]
                desired = np.nan if a < 0 else action_table[a]
            else:
                desired = targets[t]
            approved, gfl = risk_gate(
                desired,
                eff_target,
                t,
                halted,
                last_order,
                orders_today,
                warmup_bars,
                allow_short,
                min_bars_between_orders,
                max_orders_per_day,
            )
            if gfl != 0:
                ev_bar[n_ev] = t
                ev_flags[n_ev] = gfl
                n_ev += 1
            if approved != eff_target:
                eff_target = approved
                new_order = True
        if new_order:
            k = n_ord
            n_ord += 1
            ord_bar[k] = t
            ord_kind[k] = kind
            ord_target[k] = eff_target
            ord_fill_bar[k] = -1
            ord_qty[k] = 0.0
            ord_price[k] = np.nan
            ord_fee[k] = 0.0
            ord_flags[k] = 0
            ord_pos[k] = qty
            last_order = t
            orders_today += 1
            if fill_on_close:
                cash, qty, traded, fee, px, fl = execute_target_limited(
                    cash,
                    qty,
                    eff_target,
                    close[t],
                    high[t],
                    low[t],
                    commission_bps,
                    commission_per_share,
                    slippage_bps,
                    slippage_range_frac,
                    whole_shares,
                    allow_short,
                    max_qty,
                    max_notional,
                )
                ord_fill_bar[k] = t
                ord_qty[k] = traded
                ord_price[k] = px
                ord_fee[k] = fee
                ord_flags[k] = fl
                ord_pos[k] = qty
                if fl != 0:
                    ev_bar[n_ev] = t
                    ev_flags[n_ev] = fl
                    n_ev += 1
            elif t + 1 < n:
                pending = k
            else:
                ord_flags[k] = FLAG_NO_NEXT_BAR
                ev_bar[n_ev] = t
                ev_flags[n_ev] = FLAG_NO_NEXT_BAR
                n_ev += 1
        if close_at_end and t == n - 1 and qty != 0.0:
            k = n_ord
            n_ord += 1
            traded = -qty
            cash, qty, fee, px = execute_qty(
                cash,
                qty,
                traded,
                close[t],
                high[t],
                low[t],
                commission_bps,
                commission_per_share,
                slippage_bps,
                slippage_range_frac,
            )
            eff_target = 0.0
            ord_bar[k] = t
            ord_kind[k] = ORDER_END_OF_DATA
            ord_target[k] = 0.0
            ord_fill_bar[k] = t
            ord_qty[k] = traded
            ord_price[k] = px
            ord_fee[k] = fee
            ord_flags[k] = 0
            ord_pos[k] = qty
        equity = cash + qty * close[t]
        out_cash[t] = cash
        out_qty[t] = qty
        out_equity[t] = equity
        prev_equity = equity
    return n_ord, n_ev
