"""Cross-check: our engine against backtesting.py 0.6.6 on real daily bars.

SMA(10)/SMA(30) crossover, long-only, all-in, 0.1 % commission, fill at the next open, on
AAPL and MSFT from ``daily_us_stocks_stocknet.csv``: same trades (count, entry/exit bars,
sizes) and the same final equity (and equity curve) within 1e-6 relative.

Conventions of backtesting.py 0.6.6 (read in ``backtesting/backtesting.py``) and how our
*config* (not our defaults) matches each:

* Initial cash: ``Backtest(cash=10_000)``; we run one book per symbol with
  ``initial_cash=10_000`` (``cash_allocation="each"``).
* Whole shares: a relative-size order becomes ``int(margin_available * size //
  (price + commission_per_unit))`` units (``_Broker._process_orders``); ``whole_shares=True``.
* ``buy()`` default size is ``1 - sys.float_info.epsilon`` of the available margin (= cash
  when flat, margin 1), priced at ``open * (1 + commission)``; our target 1.0 spends the
  cash on ``floor(cash / (open * (1 + 10 bps)))`` units — equal unless the ratio falls within
  1e-16 of an integer.
* Commission: ``commission=0.001`` is relative and charged at entry and at exit on the
  fill value (``_open_trade`` / ``_close_trade``); ``CostModel(commission_bps=10)``.
  No spread: no slippage.
* Timing: ``next()`` runs at bar ``t``'s close; a market order fills at bar ``t+1``'s open
  (``trade_on_close=False``); ``FillRule.NEXT_OPEN``. An order placed on the last bar
  never fills; ours expires.
* Crossover: ``backtesting.lib.crossover(a, b)`` is ``a[-2] < b[-2] and a[-1] > b[-1]``
  (strict) and the loop starts at ``1 + warm-up`` (the first bar where the previous SMA
  values exist): ``SmaCrossover(10, 30, mode="cross")``.
* End: ``finalize_trades=False`` (default) leaves the last trade open, uncounted in
  ``# Trades``; ``Equity Final [$]`` marks it at the last close; ``close_at_end=False``.
"""

from __future__ import annotations

import warnings
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from stocktrade.backtest.config import BacktestConfig
from stocktrade.backtest.engine import run_backtest
from stocktrade.data.csv_bars import read_bars_csv
from stocktrade.domain.costs import CostModel, FillRule
from stocktrade.strategies import SmaCrossover
from tests.conftest import data_file

backtesting = pytest.importorskip("backtesting", reason="backtesting.py is not installed")
from backtesting import Backtest, Strategy  # noqa: E402
from backtesting.lib import crossover  # noqa: E402

CASH = 10_000
COMMISSION = 0.001
SYMBOLS = ("AAPL", "MSFT")


def _sma(values: np.ndarray, n: int) -> pd.Series:
    return pd.Series(values).rolling(n).mean()


class SmaCrossLongOnly(Strategy):  # type: ignore[misc]
    n1 = 10
    n2 = 30

    def init(self) -> None:
        self.sma1 = self.I(_sma, self.data.Close, self.n1)
        self.sma2 = self.I(_sma, self.data.Close, self.n2)

    def next(self) -> None:
        if crossover(self.sma1, self.sma2):
            if not self.position:
                self.buy()
        elif crossover(self.sma2, self.sma1):
            self.position.close()


@pytest.fixture(scope="module")
def bars() -> dict:
    data = read_bars_csv(data_file("daily_us_stocks_stocknet.csv"))
    return {s: data[s] for s in SYMBOLS}


@pytest.fixture(scope="module")
def ours(bars: dict):
    config = BacktestConfig(
        initial_cash=Decimal(CASH),
        cash_allocation="each",
        symbols=SYMBOLS,
        costs=CostModel(commission_bps=Decimal(10)),
        fill_rule=FillRule.NEXT_OPEN,
        whole_shares=True,
        close_at_end=False,
    )
    result = run_backtest(bars, SmaCrossover(10, 30, mode="cross"), config)
    result.verify()
    return result


def _theirs(frame: pd.DataFrame) -> pd.Series:
    bt = Backtest(
        frame,
        SmaCrossLongOnly,
        cash=CASH,
        commission=COMMISSION,
        trade_on_close=False,
        exclusive_orders=False,
        finalize_trades=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "trades remain open", "prices larger than cash"
        return bt.run()


@pytest.mark.integration
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_sma_crossover_matches_backtesting_py_trades_and_final_equity(bars, ours, symbol) -> None:
    frame = bars[symbol].to_frame().tz_localize(None)
    stats = _theirs(frame)
    their_trades = stats["_trades"]
    book = ours.books[symbol]
    our_trades = book.trades

    assert len(our_trades) == int(stats["# Trades"]) > 5
    idx = {pd.Timestamp(t): i for i, t in enumerate(frame.index)}
    for ours_t, (_, theirs_t) in zip(our_trades, their_trades.iterrows(), strict=True):
        assert int(ours_t.qty) == int(theirs_t["Size"])
        assert idx[pd.Timestamp(ours_t.entry_ts).tz_localize(None)] == int(theirs_t["EntryBar"])
        assert idx[pd.Timestamp(ours_t.exit_ts).tz_localize(None)] == int(theirs_t["ExitBar"])
        assert float(ours_t.entry_price) == pytest.approx(float(theirs_t["EntryPrice"]), rel=1e-12)

    final_theirs = float(stats["Equity Final [$]"])
    assert float(book.final_equity) == pytest.approx(final_theirs, rel=1e-6)
    curve = stats["_equity_curve"]["Equity"].to_numpy()
    np.testing.assert_allclose(book.equity, curve, rtol=1e-6)


@pytest.mark.integration
def test_bar_by_bar_path_gives_the_crosscheck_result_too(bars, ours) -> None:
    config = BacktestConfig(
        initial_cash=Decimal(CASH),
        cash_allocation="each",
        symbols=SYMBOLS,
        costs=CostModel(commission_bps=Decimal(10)),
        mode="step",
        check_invariants=True,
    )
    step = run_backtest(bars, SmaCrossover(10, 30, mode="cross"), config)
    step.verify()
    for s in SYMBOLS:
        assert step.books[s].records.equals(ours.books[s].records)
        np.testing.assert_allclose(step.books[s].equity, ours.books[s].equity, rtol=1e-12)
    assert step.final_equity == ours.final_equity
