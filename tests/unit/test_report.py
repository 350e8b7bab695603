"""The HTML report: self-contained, charts drawn, metrics and config shown, text escaped."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from stocktrade.backtest.report import (
    Marker,
    ReportData,
    drawdown,
    format_metric,
    render_backtest_report,
    render_report,
    thin,
)

DAY = np.timedelta64(1, "D")


def sample(n: int = 300, *, markers: int = 6) -> ReportData:
    ts = np.datetime64("2014-01-02", "ns") + np.arange(n) * DAY
    rng = np.random.default_rng(7)
    equity = 100_000 * np.cumprod(1 + rng.normal(0.0005, 0.01, n))
    close = 50 * np.cumprod(1 + rng.normal(0.0003, 0.012, n))
    marks = [
        Marker("AAPL", ts[i], "buy" if k % 2 == 0 else "sell", float(close[i]), 100.0)
        for k, i in enumerate(np.linspace(5, n - 5, markers).astype(int))
    ]
    return ReportData(
        title="Backtest sma_crossover: AAPL",
        subtitle="run r1",
        ts=ts,
        equity=equity,
        metrics={
            "total_return": equity[-1] / 1e5 - 1,
            "sharpe": 1.234,
            "max_drawdown": -0.12,
            "profit_factor": float("inf"),
            "win_rate": None,
            "final_equity": Decimal("123456.789"),
            "custom_metric": 3.5,
        },
        config={
            "strategy": {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}},
            "note": "<script>alert('x')</script>",
        },
        markers=marks,
        prices={"AAPL": (ts, close)},
        trades=[
            {
                "symbol": "AAPL",
                "side": "long",
                "qty": Decimal("100"),
                "entry_ts": ts[5],
                "entry_price": Decimal("50.5"),
                "exit_ts": ts[40],
                "exit_price": Decimal("55"),
                "pnl": Decimal("450"),
                "return_pct": Decimal("0.089"),
            }
        ],
    )


def test_report_is_one_self_contained_html_file() -> None:
    page = render_report(sample())
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # Nothing fetched from anywhere: no scripts, no external stylesheets, images or fonts.
    assert "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", page)
    assert "http://" not in page and "https://" not in page and "@import" not in page


def test_report_draws_equity_drawdown_and_symbol_charts_with_fill_markers() -> None:
    page = render_report(sample(markers=6))
    assert page.count("<svg") == 3  # equity, drawdown, AAPL
    assert "Portfolio equity" in page and "Drawdown" in page and "AAPL close and fills" in page
    assert page.count('class="mk"') == 12  # 6 fills on the equity curve + 6 on the AAPL chart
    assert page.count("<title>buy 100 AAPL") == 3 and page.count("<title>sell 100 AAPL") == 3
    polyline = re.search(r'<polyline points="([^"]+)"', page)
    assert polyline is not None and len(polyline.group(1).split()) == 300


def test_metrics_are_formatted_and_missing_values_say_so() -> None:
    page = render_report(sample())
    assert "Sharpe ratio</td><td>1.234</td>" in page
    assert "Max drawdown</td><td>-12.00 %</td>" in page
    assert "Profit factor</td><td>∞</td>" in page
    assert "Win rate</td><td>n/a</td>" in page
    assert "Final equity</td><td>123,456.79</td>" in page
    assert "custom_metric" in page


def test_config_and_text_are_escaped() -> None:
    page = render_report(sample())
    assert "&lt;script&gt;alert(" in page
    assert "fast: 10" in page and "slow: 30" in page


def test_trades_table_lists_closed_trades() -> None:
    page = render_report(sample())
    assert '<td class="pos">450.00</td>' in page
    assert "2014-01-07" in page  # entry date of the trade


def test_long_curves_are_thinned_but_keep_their_extremes() -> None:
    n = 200_000
    x = np.arange(n, dtype=np.int64)
    y = np.sin(np.arange(n) / 500.0)
    y[123_457] = 5.0
    y[77_777] = -5.0
    tx, ty = thin(x, y, 1600)
    assert len(tx) <= 1600 and tx[0] == 0 and tx[-1] == n - 1
    assert ty.max() == 5.0 and ty.min() == -5.0
    assert bool(np.all(np.diff(tx) > 0))
    page = render_report(
        ReportData(
            title="long",
            ts=np.datetime64("2020-01-01", "ns") + x * np.timedelta64(1, "m"),
            equity=100 + y,
        )
    )
    assert len(page) < 400_000


def test_drawdown_is_relative_to_the_running_peak() -> None:
    dd = drawdown(np.array([100.0, 120.0, 90.0, 130.0, 117.0]))
    np.testing.assert_allclose(dd, [0.0, 0.0, -0.25, 0.0, -0.1])


def test_an_empty_result_still_renders() -> None:
    page = render_report(
        ReportData(title="empty", ts=np.array([], "datetime64[ns]"), equity=np.array([]))
    )
    assert "no data" in page and "No closed trades." in page


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (0.1234, "pct", "12.34 %"),
        (float("nan"), "ratio", "n/a"),
        (float("-inf"), "ratio", "-∞"),
        (Decimal("1234.5"), "money", "1,234.50"),
        (29.0, "int", "29"),
    ],
)
def test_metric_formatting(value: object, kind: str, text: str) -> None:
    assert format_metric(value, kind) == text


def test_report_of_a_real_engine_result(tmp_path: Path) -> None:
    from stocktrade.backtest.config import BacktestConfig
    from stocktrade.backtest.engine import run_backtest
    from stocktrade.data.csv_bars import read_bars_csv
    from stocktrade.strategies import SmaCrossover
    from tests.conftest import data_file

    data = read_bars_csv(data_file("daily_with_dividends_splits_zipline.csv"))
    result = run_backtest(data, SmaCrossover(10, 30), BacktestConfig(start="2013-01-01"))
    page = render_backtest_report(result, title="zipline sample", config={"a": 1})
    fills = len(result.fills)
    assert fills > 0
    assert page.count('class="mk"') == 2 * fills
    assert page.count("<svg") == 2 + len(result.books)
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
