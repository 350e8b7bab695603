"""The promotion gate's decision rule and its fair validation window."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from stocktrade.backtest.config import BacktestConfig
from stocktrade.backtest.engine import run_backtest
from stocktrade.data.csv_bars import read_bars_csv
from stocktrade.domain.costs import CostModel
from stocktrade.errors import ValidationError
from stocktrade.services.promotion import (
    GateConfig,
    aggregate_metrics,
    decide,
    evaluate_window,
    window_metrics,
)
from stocktrade.strategies import BuyAndHold, SmaCrossover
from tests.conftest import data_file

BASELINES = {"buy_and_hold": {"sharpe": 0.8}, "sma_crossover": {"sharpe": 1.1}}


def test_a_policy_beating_the_best_baseline_by_more_than_the_margin_passes() -> None:
    d = decide({"sharpe": 1.4}, BASELINES, metric="sharpe", margin=0.2)
    assert d.passed and d.best_baseline == "sma_crossover"
    assert d.best_baseline_value == 1.1 and d.difference == pytest.approx(0.3)
    assert "> margin 0.2" in d.reason


def test_a_policy_within_the_margin_is_rejected() -> None:
    d = decide({"sharpe": 1.25}, BASELINES, metric="sharpe", margin=0.2)
    assert not d.passed and d.difference == pytest.approx(0.15)
    assert "<= margin 0.2" in d.reason


def test_a_tie_with_the_best_baseline_is_rejected_at_margin_zero() -> None:
    assert not decide({"sharpe": 1.1}, BASELINES).passed


def test_the_best_baseline_not_the_first_is_the_bar_to_beat() -> None:
    d = decide({"sharpe": 1.0}, BASELINES)
    assert not d.passed and d.best_baseline == "sma_crossover"


def test_a_negative_margin_admits_a_slightly_worse_policy() -> None:
    assert decide({"sharpe": 1.0}, BASELINES, margin=-0.2).passed


def test_an_undefined_policy_metric_is_rejected() -> None:
    d = decide({"sharpe": math.nan}, BASELINES)
    assert not d.passed and d.policy_value is None and "undefined" in d.reason
    assert not decide({}, BASELINES).passed


def test_undefined_baselines_are_left_out_and_none_defined_rejects() -> None:
    d = decide({"sharpe": 0.5}, {"a": {"sharpe": math.nan}, "b": {"sharpe": 0.4}})
    assert d.passed and d.best_baseline == "b"
    none = decide({"sharpe": 0.5}, {"a": {"sharpe": math.nan}, "b": {}})
    assert not none.passed and none.best_baseline is None and "no baseline" in none.reason


def test_infinities_compare_as_numbers_and_equal_infinities_do_not_win() -> None:
    assert decide({"sharpe": math.inf}, BASELINES).passed
    assert not decide({"sharpe": math.inf}, {"a": {"sharpe": math.inf}}).passed
    assert decide({"sharpe": 0.0}, {"a": {"sharpe": -math.inf}}).passed


def test_max_drawdown_is_higher_is_better() -> None:
    smaller_fall = decide(
        {"max_drawdown": -0.10}, {"bh": {"max_drawdown": -0.25}}, metric="max_drawdown"
    )
    assert smaller_fall.passed


def test_total_return_margin_is_in_return_units() -> None:
    base = {"bh": {"total_return": 0.05}}
    assert decide({"total_return": 0.08}, base, metric="total_return", margin=0.02).passed
    assert not decide({"total_return": 0.06}, base, metric="total_return", margin=0.02).passed


def test_the_decision_serialises_without_non_finite_numbers() -> None:
    d = decide({"sharpe": math.inf}, BASELINES).to_dict()
    assert d["policy_value"] is None and d["difference"] is None and d["passed"] is True


def test_bad_gate_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="gate metric must be one of"):
        decide({"sharpe": 1.0}, BASELINES, metric="luck")
    with pytest.raises(ValidationError, match="finite"):
        decide({"sharpe": 1.0}, BASELINES, margin=math.nan)
    with pytest.raises(ValidationError, match="at least one baseline"):
        decide({"sharpe": 1.0}, {})
    with pytest.raises(ValueError, match="margin must be a finite number"):
        GateConfig(margin=math.inf)
    with pytest.raises(ValueError, match="at least one baseline"):
        GateConfig(baselines={})


def test_walk_forward_metrics_are_averaged_over_folds_skipping_undefined_values() -> None:
    out = aggregate_metrics(
        [{"sharpe": 1.0, "total_return": 0.1}, {"sharpe": math.nan, "total_return": 0.3}]
    )
    assert out == {"sharpe": 1.0, "total_return": pytest.approx(0.2)}
    assert math.isnan(aggregate_metrics([{"sharpe": math.nan}])["sharpe"])


COSTS = CostModel(commission_bps=Decimal(5), slippage_bps=Decimal(2))


@pytest.fixture(scope="module")
def aapl():  # type: ignore[no-untyped-def]
    return read_bars_csv(data_file("daily_us_stocks_stocknet.csv"))["AAPL"]


def test_buy_and_hold_scores_the_same_with_warm_up_history_as_started_at_the_window(
    aapl,  # type: ignore[no-untyped-def]
) -> None:
    # Buy-and-hold needs no warm-up, so the fair window (history, orders forbidden before
    # the window, metrics on the window only) must equal a plain backtest of the window.
    config = BacktestConfig(costs=COSTS)
    fair = evaluate_window(
        BuyAndHold(), {"AAPL": aapl}, start="2015-01-01", end="2015-12-31", config=config,
        baselines={}, engine=run_backtest, history_bars=100,
    )  # fmt: skip
    plain = run_backtest(
        {"AAPL": aapl}, BuyAndHold(),
        BacktestConfig(costs=COSTS, start="2015-01-01", end="2015-12-31T23:59:59"),
    )  # fmt: skip
    assert fair.history_bars == 100 and fair.bars == 252
    for key in ("total_return", "sharpe", "max_drawdown", "annual_volatility", "final_equity"):
        assert fair.policy[key] == pytest.approx(plain.metrics[key], rel=1e-12), key
    assert fair.policy["n_periods"] == plain.metrics["n_periods"] == 252


def test_no_order_falls_in_the_warm_up_history(aapl) -> None:  # type: ignore[no-untyped-def]
    config = BacktestConfig(costs=COSTS)
    result = run_backtest({"AAPL": aapl.between(None, "2015-12-31")}, SmaCrossover(10, 30), config)
    assert len(result.orders) > 0  # without the warm-up rule the SMA trades the history
    ev = evaluate_window(
        SmaCrossover(10, 30), {"AAPL": aapl}, start="2015-01-01", end="2015-12-31",
        config=config, baselines={"bh": BuyAndHold()}, engine=run_backtest, history_bars=60,
    )  # fmt: skip
    assert ev.start == "2015-01-02T00:00:00Z" and ev.end == "2015-12-31T00:00:00Z"
    assert set(ev.baselines) == {"bh"}
    # The SMA entered the window with its indicators warm: its first order is on day one.
    history = aapl.between(None, "2015-12-31")
    k = int(np.searchsorted(history.ts, np.datetime64("2015-01-01")))
    windowed = run_backtest(
        {"AAPL": history.slice(k - 60, len(history))},
        SmaCrossover(10, 30),
        BacktestConfig(costs=COSTS, risk=config.risk.__class__(warmup_bars=60)),
    )
    first_order_bar = min(int(b) for b in windowed.books["AAPL"].records.bar)
    assert first_order_bar >= 60
    assert window_metrics(windowed, "2015-01-01")["n_periods"] == 252


def test_a_symbol_without_bars_in_the_window_or_enough_history_is_refused(
    aapl,  # type: ignore[no-untyped-def]
) -> None:
    config = BacktestConfig(costs=COSTS)
    with pytest.raises(ValidationError, match="no AAPL bars in the validation window"):
        evaluate_window(
            BuyAndHold(), {"AAPL": aapl}, start="2020-01-01", end="2020-12-31", config=config,
            baselines={}, engine=run_backtest,
        )  # fmt: skip
    with pytest.raises(ValidationError, match="needs 5000 bars of history"):
        evaluate_window(
            BuyAndHold(), {"AAPL": aapl}, start="2015-01-01", end="2015-12-31", config=config,
            baselines={}, engine=run_backtest, min_history=5000,
        )  # fmt: skip
