"""The backtest engine: validation first, independent books, equal paths, results and exports."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from stocktrade.backtest.config import BacktestConfig
from stocktrade.backtest.engine import book_cash, run_backtest
from stocktrade.data.arrays import BarArrays
from stocktrade.domain.costs import CostModel, FillRule
from stocktrade.domain.risk import RiskLimits
from stocktrade.errors import ValidationError
from stocktrade.strategies import (
    BarInput,
    BuyAndHold,
    PositionView,
    RsiMeanReversion,
    Signal,
    SmaCrossover,
)


def random_bars(n: int, seed: int, symbol: str) -> BarArrays:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = np.concatenate(([close[0]], close[:-1])) * np.exp(rng.normal(0, 0.003, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    ts = np.datetime64("2010-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    return BarArrays(symbol, "1d", ts, open_, high, low, close, rng.uniform(1e5, 1e6, n))


@pytest.fixture(scope="module")
def data() -> dict[str, BarArrays]:
    return {
        "AAA": random_bars(500, seed=1, symbol="AAA"),
        "BBB": random_bars(450, seed=2, symbol="BBB"),
    }


COSTS = CostModel(
    commission_bps=Decimal(5),
    commission_per_share=Decimal("0.005"),
    slippage_bps=Decimal(2),
    slippage_range_frac=Decimal("0.05"),
)


@pytest.mark.parametrize("fill_rule", list(FillRule))
@pytest.mark.parametrize("close_at_end", [False, True])
@pytest.mark.parametrize(
    "strategy",
    [SmaCrossover(10, 30), SmaCrossover(5, 15, allow_short=True), RsiMeanReversion(), BuyAndHold()],
    ids=lambda s: s.name,
)
def test_fast_path_and_bar_by_bar_path_give_the_same_backtest(
    data, strategy, fill_rule, close_at_end
) -> None:
    risk = RiskLimits(allow_short=True, min_bars_between_orders=2, max_notional=Decimal(40_000))
    config = BacktestConfig(
        initial_cash=Decimal(100_000),
        costs=COSTS,
        risk=risk,
        fill_rule=fill_rule,
        close_at_end=close_at_end,
    )
    fast = run_backtest(data, strategy, config)
    step = run_backtest(data, strategy, replace(config, mode="step", check_invariants=True))
    assert (fast.path, step.path) == ("fast", "step")
    for s in data:
        assert fast.books[s].records.equals(step.books[s].records)
        np.testing.assert_allclose(fast.books[s].equity, step.books[s].equity, rtol=1e-12)
        np.testing.assert_array_equal(fast.books[s].event_code, step.books[s].event_code)
    assert fast.final_equity == step.final_equity
    assert [t.pnl for t in fast.trades] == [t.pnl for t in step.trades]
    fast.verify()
    step.verify()
    if close_at_end:
        assert all(b.qty[-1] == 0 for b in fast.books.values())


def test_same_inputs_give_identical_results(data) -> None:
    config = BacktestConfig(costs=COSTS)
    a = run_backtest(data, SmaCrossover(), config)
    b = run_backtest(data, SmaCrossover(), config)
    for s in data:
        assert a.books[s].records.equals(b.books[s].records)
        np.testing.assert_array_equal(a.books[s].equity, b.books[s].equity)
    assert a.metrics == b.metrics


def test_books_are_independent_and_split_the_initial_cash(data) -> None:
    config = BacktestConfig(initial_cash=Decimal("100000.01"), costs=COSTS)
    both = run_backtest(data, SmaCrossover(), config)
    assert [b.initial_cash for b in both.books.values()] == [
        Decimal("50000.01"),
        Decimal("50000.00"),
    ]
    assert both.initial_cash == Decimal("100000.01")
    alone = run_backtest(
        data, SmaCrossover(), replace(config, symbols=("BBB",), initial_cash=Decimal(50_000))
    )
    np.testing.assert_array_equal(alone.books["BBB"].equity, both.books["BBB"].equity)
    # portfolio curve: union of bar times, each book carried forward
    assert len(both.ts) == 500
    np.testing.assert_allclose(both.equity[-1], sum(b.equity[-1] for b in both.books.values()))
    np.testing.assert_allclose(both.equity, both.cash + both.position_value, rtol=1e-12)
    assert both.final_equity == sum(b.final_equity for b in both.books.values())


def test_each_allocation_gives_every_book_the_full_cash() -> None:
    config = BacktestConfig(initial_cash=Decimal(1000), cash_allocation="each")
    assert book_cash(config, 3) == [Decimal(1000)] * 3
    assert book_cash(replace(config, cash_allocation="split"), 3) == [
        Decimal("333.34"),
        Decimal("333.33"),
        Decimal("333.33"),
    ]


def test_date_range_keeps_only_bars_inside_it(data) -> None:
    config = BacktestConfig.from_dict({"symbols": ["AAA"], "start": "2010-03-01"})
    config = replace(config, end=datetime(2010, 6, 30, tzinfo=UTC))
    result = run_backtest(data, BuyAndHold(), config)
    ts = result.books["AAA"].ts
    assert ts[0] == np.datetime64("2010-03-01") and ts[-1] == np.datetime64("2010-06-30")
    assert len(ts) == 122


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: run_backtest(
                d, BuyAndHold(), BacktestConfig(costs=CostModel(commission_bps=Decimal(-1)))
            ),
            "commission_bps must be >= 0",
        ),
        (
            lambda d: run_backtest(
                d,
                BuyAndHold(),
                BacktestConfig.from_dict({"start": "2012-01-01", "end": "2011-01-01"}),
            ),
            "start must be on or before end",
        ),
        (lambda d: run_backtest({}, BuyAndHold(), BacktestConfig()), "no market data"),
        (
            lambda d: run_backtest(d, BuyAndHold(), BacktestConfig(symbols=("ZZZ",))),
            r"unknown symbol\(s\) \['ZZZ'\]",
        ),
        (
            lambda d: run_backtest(d, BuyAndHold(), BacktestConfig(start=datetime(2030, 1, 1))),
            "no bars for AAA",
        ),
        (
            lambda d: run_backtest(d, BuyAndHold(), BacktestConfig(initial_cash=Decimal(0))),
            "initial_cash",
        ),
        (lambda d: BacktestConfig.from_dict({"cash": 5}), "unknown backtest config fields"),
        (lambda d: BacktestConfig.from_dict({"costs": {"slippage_bps": "-2"}}), "slippage_bps"),
        (lambda d: BacktestConfig(fill_rule="at_noon"), "fill_rule"),  # type: ignore[arg-type]
        (lambda d: BacktestConfig(mode="turbo"), "mode"),  # type: ignore[arg-type]
    ],
)
def test_bad_config_or_data_is_rejected_before_any_work(data, make, message) -> None:
    with pytest.raises(ValidationError, match=message):
        make(data)


class OnlyOnBar:
    """A strategy with no fast path: flips between long and flat every 7 bars."""

    name = "flipper"
    warmup = 0

    def params(self) -> dict:
        return {}

    def reset(self) -> None:
        pass

    def on_bar(self, bar: BarInput, position: PositionView) -> Signal:
        return Signal(1.0 if (bar.index // 7) % 2 == 0 else 0.0)


def test_a_strategy_without_a_fast_path_runs_bar_by_bar_and_fast_mode_refuses_it(data) -> None:
    result = run_backtest(data, OnlyOnBar(), BacktestConfig(costs=COSTS))
    assert result.path == "step" and len(result.trades) > 20
    result.verify()
    with pytest.raises(ValidationError, match="mode 'fast' needs"):
        run_backtest(data, OnlyOnBar(), BacktestConfig(mode="fast"))


def test_result_exports_frames_metrics_and_decimal_money(data) -> None:
    result = run_backtest(data, SmaCrossover(5, 20), BacktestConfig(costs=COSTS))
    frames = result.to_frames()
    assert set(frames) == {"equity", "equity_by_symbol", "orders", "fills", "trades", "risk_events"}
    eq = frames["equity"]
    assert list(eq.columns) == ["ts", "cash", "position_value", "equity"]
    np.testing.assert_allclose(eq["cash"] + eq["position_value"], eq["equity"], rtol=1e-12)
    assert len(frames["trades"]) == len(result.trades) > 10
    assert len(frames["orders"]) == len(result.orders) >= len(frames["fills"])
    assert isinstance(frames["trades"]["pnl"].iloc[0], Decimal)
    assert {
        "entry_ts",
        "exit_ts",
        "entry_price",
        "exit_price",
        "qty",
        "pnl",
        "holding_time",
    } <= set(frames["trades"])
    m = result.metrics
    assert m["n_trades"] == len(result.trades)
    assert m["final_equity"] == pytest.approx(float(result.final_equity))
    assert m["total_return"] == pytest.approx(
        float(result.final_equity / result.initial_cash) - 1, rel=1e-9
    )
    assert {"sharpe", "max_drawdown", "cagr", "win_rate", "turnover", "exposure"} <= set(m)
    assert result.realised_pnl == sum(t.pnl for t in result.trades)


def test_config_round_trips_through_a_dict() -> None:
    config = BacktestConfig(
        initial_cash=Decimal("2500.5"),
        symbols=("AAA",),
        start=datetime(2011, 1, 3),
        costs=COSTS,
        risk=RiskLimits(max_orders_per_day=2),
        fill_rule=FillRule.CLOSE,
    )
    assert BacktestConfig.from_dict(config.to_dict()) == config


def test_trading_core_runs_live_style_on_decimal_bars_and_resumes_from_saved_state() -> None:
    from datetime import timedelta

    from stocktrade.adapters.brokers.simulated import SimulatedBroker
    from stocktrade.domain.bars import Bar, Timeframe
    from stocktrade.domain.ledger import Ledger
    from stocktrade.services.trading import RiskState, TradingCore

    closes = ["10.00", "10.50", "11.20", "10.90", "11.40", "12.00", "11.10", "10.20", "10.80"]
    bars = [
        Bar("ABC", Timeframe.D1, datetime(2024, 1, 2, tzinfo=UTC) + timedelta(days=i),
            Decimal(c), Decimal(c) + 1, Decimal(c) - 1, Decimal(c), Decimal(1000))
        for i, c in enumerate(closes)
    ]  # fmt: skip
    limits = RiskLimits(min_bars_between_orders=2)

    def core(
        ledger: Ledger, broker: SimulatedBroker, state: RiskState | None, jit: bool
    ) -> TradingCore:
        return TradingCore("ABC", SmaCrossover(2, 3), ledger=ledger, broker=broker, limits=limits,
                           check_invariants=True, jit=jit, state=state)  # fmt: skip

    def make_broker(jit: bool) -> SimulatedBroker:
        return SimulatedBroker(COSTS, limits=limits, jit=jit)

    # one core over all bars (compiled kernels)
    ledger_a, broker_a = Ledger(Decimal(1000)), make_broker(True)
    a = core(ledger_a, broker_a, None, True)
    steps = [a.on_bar(b) for b in bars]
    # the same bars split over two "invocations", state saved as JSON, uncompiled kernels
    ledger_b, broker_b = Ledger(Decimal(1000)), make_broker(False)
    b1 = core(ledger_b, broker_b, None, False)
    for bar in bars[:5]:
        b1.on_bar(bar)
    saved = RiskState.from_dict(b1.state.to_dict())
    b2 = core(ledger_b, broker_b, saved, False)
    b2.strategy = b1.strategy  # strategy state travels with the agent
    for bar in bars[5:]:
        b2.on_bar(bar)

    assert [f.qty for f in ledger_a.fills] == [f.qty for f in ledger_b.fills]
    assert ledger_a.cash == ledger_b.cash
    placed = [s for s in steps if s.risk.order_placed]
    assert placed and all(isinstance(s.equity, Decimal) for s in steps)
    assert steps[-1].equity == ledger_a.equity({"ABC": Decimal(closes[-1])})
    throttled = [(s.bar_index, e.code.name) for s in steps for e in s.events]
    assert throttled == [(5, "THROTTLE_MIN_BARS"), (7, "THROTTLE_MIN_BARS")]
    assert [(f.side.value, f.ts.day) for f in ledger_a.fills] == [
        ("buy", 5),
        ("sell", 7),
        ("buy", 9),
    ]
