"""The backtest part of ``stocktrade demo``: the three baselines on real daily bars.

Each baseline (buy-and-hold, SMA crossover, RSI mean reversion) runs as a recorded backtest
run, through the same service and engine as ``stocktrade backtest``, on symbols the demo has
imported (AAPL, MSFT, JPM from the StockNet file, 2013-2015), with commission and slippage.
Prints a metrics table and where each HTML report is.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console

    from stocktrade.domain.runs import Run

__all__ = ["BASELINES", "DEMO_RANGE", "DEMO_SYMBOLS", "run"]

DEMO_SYMBOLS = ("AAPL", "MSFT", "JPM")
DEMO_RANGE = ("2013-01-01", "2015-12-31")
DEMO_COSTS = {"commission_bps": "5", "slippage_bps": "2"}
#: (label, strategy, params)
BASELINES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("buy and hold", "buy_and_hold", {}),
    ("SMA crossover 10/30", "sma_crossover", {"fast": 10, "slow": 30}),
    (
        "RSI(14) 30/70",
        "rsi_mean_reversion",
        {"window": 14, "lower": 30, "upper": 70},
    ),
)


def run(console: Console) -> None:
    """Backtest the baselines on the demo symbols; print metrics and report paths."""
    from stocktrade.cli.backtest import OWNER, container, metric_text, report_path
    from stocktrade.services.backtest_runs import run_backtest_now

    c = container()
    bars = c.bars()
    stored = {s.symbol for s in bars.summary(list(DEMO_SYMBOLS)) if s.timeframe == "1d"}
    symbols = [s for s in DEMO_SYMBOLS if s in stored]
    if not symbols:
        console.print(
            f"[yellow]no daily bars for {', '.join(DEMO_SYMBOLS)}: import "
            "daily_us_stocks_stocknet.csv to run the backtest demo[/yellow]"
        )
        return
    start, end = DEMO_RANGE
    console.print(
        f"baselines on {', '.join(symbols)} daily bars {start} -> {end}, cash split "
        f"equally, fills at the next open, commission {DEMO_COSTS['commission_bps']} bps, "
        f"slippage {DEMO_COSTS['slippage_bps']} bps"
    )
    finished: list[tuple[str, Run, float]] = []
    for label, strategy, params in BASELINES:
        request = {
            "strategy": strategy,
            "params": params,
            "symbols": symbols,
            "start": start,
            "end": end,
            "costs": DEMO_COSTS,
        }
        started = time.perf_counter()
        result = run_backtest_now(
            request,
            runs=c.runs(),
            bars=bars,
            store=c.store(),
            engine=c.backtest_engine(),
            owner=OWNER,
        )
        finished.append((label, result, time.perf_counter() - started))
    table = Table(title=f"baseline backtests ({', '.join(symbols)}, {start[:4]}-{end[:4]})")
    columns = (
        ("strategy", "left"),
        ("total return", "right"),
        ("CAGR", "right"),
        ("Sharpe", "right"),
        ("max drawdown", "right"),
        ("trades", "right"),
        ("win rate", "right"),
        ("fees", "right"),
        ("final equity", "right"),
        ("run", "left"),
        ("seconds", "right"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for label, r, seconds in finished:
        m = r.metrics
        table.add_row(
            label,
            metric_text(m, "total_return"),
            metric_text(m, "cagr"),
            metric_text(m, "sharpe"),
            metric_text(m, "max_drawdown"),
            metric_text(m, "n_trades"),
            metric_text(m, "win_rate"),
            metric_text(m, "total_fees"),
            metric_text(m, "final_equity"),
            r.id[:8],
            f"{seconds:.2f}",
        )
    console.print(table)
    for label, r, _seconds in finished:
        path = report_path(r)
        where = str(path) if path else (r.artifacts or {}).get("report.html", "n/a")
        console.print(f"{label} report: {where}", soft_wrap=True)
