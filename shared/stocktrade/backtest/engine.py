"""The backtest engine: one strategy over one or many symbols and a date range.

Books: every symbol is an **independent book** (its own cash, position, risk state and
kill switch); by default the initial cash is split equally between them
(``BacktestConfig.cash_allocation``). Books never lend each other cash, so a symbol's result
does not depend on which other symbols run with it; the portfolio curve is the sum of the
books on the union of their bar times.

Paths (``BacktestConfig.mode``), all deterministic and giving the same result:

* **fast** — the strategy's vectorised :meth:`targets` (baselines) feed the compiled loop
  :func:`stocktrade.sim.kernels.simulate`;
* **policy_batch** — a :class:`~stocktrade.strategies.base.BatchPolicyStrategy` (ONNX policy)
  is evaluated for every bar under each position state (-1/0/+1) in batched calls; the compiled
  loop then picks, bar by bar, the action for the position actually held;
* **step** — bar by bar through :class:`stocktrade.services.trading.TradingCore` with the
  simulated broker and the Decimal ledger: the path the live chain runs.

Per bar the sequence is the one documented in :mod:`stocktrade.services.trading`: decisions use
the bar's close; with ``FillRule.NEXT_OPEN`` (default) the order fills at the next bar's open,
sized then from that open, the cash and the position; an order decided on the last bar expires.

Aligning with backtesting.py 0.6.6 (``tests/integration/test_crosscheck_backtesting_py.py``
matches its trade count and final equity to 1e-6 on real data) takes only configuration:

* whole shares (``whole_shares=True``, the default): backtesting.py trades integer units;
* all-in buy: ``buy()`` with its default size (``1 - eps`` of equity) buys
  ``floor(cash * (1 - eps) / (open * (1 + commission)))`` units; our target 1.0 buys
  ``floor(cash / (open * (1 + commission_bps / 1e4)))`` — the same count unless the ratio is
  within 1e-16 of an integer;
* commission ``commission=0.001`` (relative, charged at entry and at exit on the fill value)
  = ``CostModel(commission_bps=10)``; no spread = no slippage;
* market orders placed in ``next()`` of bar ``t`` fill at bar ``t+1``'s open
  (``trade_on_close=False``) = ``FillRule.NEXT_OPEN``;
* crossovers: ``backtesting.lib.crossover`` is strict (``a[-2] < b[-2] and a[-1] > b[-1]``) and
  first evaluated on the bar after both SMAs exist = ``SmaCrossover(mode="cross")``; the SMAs are
  the means of the last n closes, as ``pd.Series.rolling(n).mean()``;
* the last open trade is not closed (``finalize_trades=False``, the default) and is not
  counted as a trade, and final equity marks it at the last close = ``close_at_end=False``;
* initial cash: ``Backtest(cash=...)`` = one book per symbol with ``initial_cash=cash`` (run
  each symbol alone, or ``cash_allocation="each"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal
from typing import Any

import numpy as np

from stocktrade.backtest.config import BacktestConfig
from stocktrade.backtest.result import BacktestResult, BookResult, OrderRecords, to_datetime
from stocktrade.data.arrays import BarArrays
from stocktrade.domain.costs import FillRule
from stocktrade.domain.ledger import Ledger
from stocktrade.domain.risk import RiskCode
from stocktrade.errors import ValidationError
from stocktrade.logging import get_logger
from stocktrade.sim import kernels
from stocktrade.sim.broker import SimulatedBroker
from stocktrade.strategies.base import BarInput, Strategy, has_batch_actions, has_targets

__all__ = ["book_cash", "periods_per_year", "run_backtest"]

log = get_logger(__name__)

_PERIODS = {"1d": 252.0, "1h": 252.0 * 6.5, "15m": 252.0 * 26, "5m": 252.0 * 78, "1m": 252.0 * 390}
_CENT = Decimal("0.01")


def periods_per_year(timeframe: str) -> float:
    """Bars per year for metrics: 252 trading days, intraday 6.5-hour sessions."""
    return _PERIODS.get(str(timeframe), 252.0)


def book_cash(config: BacktestConfig, n_books: int) -> list[Decimal]:
    """Starting cash of each book (see ``BacktestConfig.cash_allocation``)."""
    if config.cash_allocation == "each":
        return [config.initial_cash] * n_books
    share = (config.initial_cash / n_books).quantize(_CENT, rounding=ROUND_DOWN)
    first = config.initial_cash - share * (n_books - 1)
    return [first] + [share] * (n_books - 1)


def _select(data: Mapping[str, BarArrays], config: BacktestConfig) -> dict[str, BarArrays]:
    """Validate the data against the config and cut the date range (no work before this)."""
    if not isinstance(data, Mapping) or not data:
        raise ValidationError("no market data: expected a non-empty mapping symbol -> BarArrays")
    symbols = list(config.symbols) if config.symbols is not None else sorted(data)
    unknown = [s for s in symbols if s not in data]
    if unknown:
        raise ValidationError(
            f"unknown symbol(s) {unknown}: the data holds {sorted(data)[:20]}"
            + (" ..." if len(data) > 20 else "")
        )
    start = None if config.start is None else np.datetime64(config.start.replace(tzinfo=None), "ns")
    end = None if config.end is None else np.datetime64(config.end.replace(tzinfo=None), "ns")
    out: dict[str, BarArrays] = {}
    for s in symbols:
        bars = data[s]
        if start is not None or end is not None:
            bars = bars.between(start, end)
        if len(bars) == 0:
            raise ValidationError(
                f"no bars for {s} between {config.start} and {config.end} "
                f"(the data has {len(data[s])} bars)"
            )
        prices = np.stack([bars.open, bars.high, bars.low, bars.close])
        if not bool(np.all(np.isfinite(prices) & (prices > 0))):
            raise ValidationError(f"{s}: prices must be finite and > 0")
        out[s] = bars
    return out


def _resolve_path(strategy: Strategy, mode: str) -> str:
    vector = has_targets(strategy)
    batch = has_batch_actions(strategy)
    if mode == "step":
        return "step"
    if vector:
        return "fast"
    if batch:
        return "policy_batch"
    if mode == "fast":
        raise ValidationError(
            f"mode 'fast' needs a strategy with targets() or batch_actions(); "
            f"{type(strategy).__name__} has neither (use mode 'auto' or 'step')"
        )
    return "step"


def _days(ts: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(ts.astype("datetime64[D]").astype(np.int64))


def _run_compiled(
    bars: BarArrays,
    cash0: Decimal,
    config: BacktestConfig,
    targets: np.ndarray | None,
    actions: np.ndarray | None,
    table: np.ndarray,
) -> BookResult:
    n = len(bars)
    risk = config.risk.kernel_args()
    cb, cps, sb, srf = config.costs.kernel_args()
    out_cash = np.empty(n)
    out_qty = np.empty(n)
    out_equity = np.empty(n)
    m = n + 1
    o_bar = np.empty(m, np.int64)
    o_kind = np.empty(m, np.int64)
    o_target = np.empty(m)
    o_fill = np.empty(m, np.int64)
    o_qty = np.empty(m)
    o_price = np.empty(m)
    o_fee = np.empty(m)
    o_flags = np.empty(m, np.int64)
    o_pos = np.empty(m)
    e_bar = np.empty(3 * n + 2, np.int64)
    e_flags = np.empty(3 * n + 2, np.int64)
    use_actions = actions is not None
    tg = targets if targets is not None else np.empty(0)
    ac = actions if actions is not None else np.empty((0, 3), np.int64)
    o, h, lo, c = (
        np.ascontiguousarray(x, dtype=np.float64)
        for x in (bars.open, bars.high, bars.low, bars.close)
    )
    n_ord, n_ev = kernels.simulate(
        o,
        h,
        lo,
        c,
        _days(bars.ts),
        tg,
        ac,
        table,
        use_actions,
        float(cash0),
        cb,
        cps,
        sb,
        srf,
        config.fill_rule is FillRule.CLOSE,
        config.whole_shares,
        config.close_at_end,
        int(risk["warmup_bars"]),
        bool(risk["allow_short"]),
        int(risk["min_bars_between_orders"]),
        int(risk["max_orders_per_day"]),
        float(risk["max_qty"]),
        float(risk["max_notional"]),
        float(risk["max_daily_loss"]),
        float(risk["max_daily_loss_frac"]),
        out_cash,
        out_qty,
        out_equity,
        o_bar,
        o_kind,
        o_target,
        o_fill,
        o_qty,
        o_price,
        o_fee,
        o_flags,
        o_pos,
        e_bar,
        e_flags,
    )
    records = OrderRecords(
        o_bar[:n_ord],
        o_kind[:n_ord],
        o_target[:n_ord],
        o_fill[:n_ord],
        o_qty[:n_ord],
        o_price[:n_ord],
        o_fee[:n_ord],
        o_flags[:n_ord],
        o_pos[:n_ord],
    )
    ev_bar, ev_code = _expand_events(e_bar[:n_ev], e_flags[:n_ev])
    return BookResult(
        symbol=bars.symbol,
        timeframe=bars.timeframe,
        ts=bars.ts,
        close=bars.close,
        cash=out_cash,
        qty=out_qty,
        equity=out_equity,
        initial_cash=cash0,
        records=records,
        event_bar=ev_bar,
        event_code=ev_code,
        limits=config.risk,
    )


def _expand_events(bars: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bar, flag mask) rows -> (bar, code) rows, one per code, codes ascending within a row."""
    bits = ((flags[:, None] >> np.arange(len(RiskCode), dtype=np.int64)[None, :]) & 1).astype(bool)
    rows, codes = np.nonzero(bits)  # row-major: keeps the event order
    return np.ascontiguousarray(bars[rows], dtype=np.int64), codes.astype(np.int64)


def _run_step(
    bars: BarArrays, cash0: Decimal, config: BacktestConfig, strategy: Strategy
) -> BookResult:
    from stocktrade.services.trading import TradingCore

    symbol = bars.symbol
    n = len(bars)
    ledger = Ledger(cash0)
    broker = SimulatedBroker(
        config.costs,
        fill_rule=config.fill_rule,
        whole_shares=config.whole_shares,
        limits=config.risk,
        id_prefix="bt",
    )
    core = TradingCore(
        symbol,
        strategy,
        ledger=ledger,
        broker=broker,
        limits=config.risk,
        fill_rule=config.fill_rule,
        close_at_end=config.close_at_end,
        check_invariants=config.check_invariants,
    )
    cash = np.empty(n)
    qty = np.empty(n)
    equity = np.empty(n)
    rows: list[tuple[int, int, float, int, float, float, float, int, float]] = []
    ev_bar: list[int] = []
    ev_code: list[int] = []
    o, h, lo, c, v = (x.tolist() for x in (bars.open, bars.high, bars.low, bars.close, bars.volume))
    for t in range(n):
        step = core.on_bar(
            BarInput(t, to_datetime(bars.ts[t]), o[t], h[t], lo[t], c[t], v[t]), is_last=t == n - 1
        )
        cash[t] = float(step.cash)
        qty[t] = float(step.position_qty)
        equity[t] = float(step.equity)
        for ex in step.executions:
            rows.append(
                (
                    ex.bar_index,
                    ex.kind,
                    ex.target,
                    ex.fill_bar_index,
                    ex.traded_qty,
                    ex.price,
                    ex.fee,
                    ex.flags,
                    ex.pos_after,
                )
            )
        for e in step.events:
            ev_bar.append(t if e.bar_index is None else e.bar_index)
            ev_code.append(int(e.code))
    return BookResult(
        symbol=symbol,
        timeframe=bars.timeframe,
        ts=bars.ts,
        close=bars.close,
        cash=cash,
        qty=qty,
        equity=equity,
        initial_cash=cash0,
        records=OrderRecords.from_rows(rows),
        event_bar=np.asarray(ev_bar, np.int64),
        event_code=np.asarray(ev_code, np.int64),
        limits=config.risk,
    )


def _as_targets(values: Any, n: int, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ValidationError(f"{name}.targets() must return {n} values, found shape {arr.shape}")
    if bool(np.any(np.isinf(arr))):
        raise ValidationError(f"{name}.targets() returned an infinite target")
    return arr


def _as_actions(values: Any, n: int, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(values, dtype=np.int64)
    if arr.shape != (n, 3):
        raise ValidationError(
            f"{name}.batch_actions() must return shape ({n}, 3), found {arr.shape}"
        )
    if bool(np.any((arr < -1) | (arr > 2))):
        raise ValidationError(f"{name}.batch_actions() returned an action outside -1..2")
    return arr


def run_backtest(
    data: Mapping[str, BarArrays], strategy: Strategy, config: BacktestConfig | None = None
) -> BacktestResult:
    """Run ``strategy`` over ``data`` (symbol -> bars) as ``config`` says.

    Args:
        data: bars per symbol (time-sorted :class:`~stocktrade.data.arrays.BarArrays`).
        strategy: the strategy; it is ``reset()`` before each symbol's book.
        config: the run's configuration (default: :class:`BacktestConfig()`).

    Returns:
        The :class:`~stocktrade.backtest.result.BacktestResult`.

    Raises:
        ValidationError: bad config or data (empty data, unknown symbol, no bars in the date
            range, non-positive prices, a strategy returning malformed targets), raised before
            any simulation work.
    """
    config = config if config is not None else BacktestConfig()
    if not isinstance(config, BacktestConfig):
        raise ValidationError(f"config must be a BacktestConfig, found {type(config).__name__}")
    selected = _select(data, config)
    path = _resolve_path(strategy, config.mode)
    cash = book_cash(config, len(selected))
    books: dict[str, BookResult] = {}
    name = getattr(strategy, "name", type(strategy).__name__)
    for (symbol, bars), cash0 in zip(selected.items(), cash, strict=True):
        strategy.reset()
        if path == "fast":
            targets = _as_targets(strategy.targets(bars), len(bars), name)  # type: ignore[attr-defined]
            books[symbol] = _run_compiled(bars, cash0, config, targets, None, np.empty(3))
        elif path == "policy_batch":
            actions = _as_actions(strategy.batch_actions(bars), len(bars), name)  # type: ignore[attr-defined]
            table = np.asarray(strategy.action_table, dtype=np.float64)  # type: ignore[attr-defined]
            books[symbol] = _run_compiled(bars, cash0, config, None, actions, table)
        else:
            books[symbol] = _run_step(bars, cash0, config, strategy)
    timeframe = next(iter(selected.values())).timeframe
    ppy = config.periods_per_year or periods_per_year(timeframe)
    log.debug(
        "backtest done",
        extra={
            "strategy": name,
            "path": path,
            "symbols": list(books),
            "bars": sum(len(b) for b in selected.values()),
        },
    )
    params = strategy.params() if callable(getattr(strategy, "params", None)) else {}
    return BacktestResult(
        config=config,
        strategy_name=name,
        strategy_params=params,
        books=books,
        path=path,
        periods_per_year=ppy,
    )
